//! The message log: every chat message is stored before anyone hears of it.
//!
//! Handlers hand a [`Draft`] to [`MessageLog::append`] and wait. One writer
//! task takes every draft waiting at that moment (up to
//! [`MAX_MESSAGES_PER_WRITE`]), stamps each with its id and time, and stores
//! them with one statement, so one commit (group commit): a burst of
//! messages costs a few round trips to the database, not one each, and each
//! sender waits at most for the commit in progress plus its own.
//!
//! The writer is also the one that publishes: after the commit it hands the
//! batch to its `publish` callback (which sends each message to its room),
//! then answers the senders, then queues the batch for the webhook. So ids
//! are stamped, stored and delivered in one order — a client that resumes
//! from the last id it saw (`since`) misses nothing this process stored —
//! and a message is sent to its room even if its sender went away while it
//! was being stored. Only after the commit does `append` return, so an
//! acknowledged message survives a crash.
//!
//! A message is either refused or stored, never left in doubt by tally's
//! own waiting: one the writer has not taken within [`QUEUE_BUDGET`] is
//! refused unstored (a sender that gave up waiting would otherwise see a
//! message it was told failed appear later), and from the first moment of
//! shutdown ([`MessageLog::close`]) a new message is refused at once. Only
//! a write the database did not answer in time is in doubt; the refusal
//! then carries the message as attempted, which a retry may send again
//! unchanged ([`Entry::Retry`]): its id is skipped if it was stored.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::conversation::{Draft, Message};
use crate::metrics::Metrics;
use crate::refusal::{Code, Refusal};
use crate::store::{MAX_MESSAGES_PER_WRITE, Store};
use crate::webhook::WebhookQueue;

/// Messages waiting for the writer. When it is full, senders wait: that is
/// the back-pressure a database slower than the chat puts on posters.
const QUEUE: usize = 10_000;

/// How long a message may wait for the writer to take it; past it, it is
/// refused unstored. The HTTP API's other requests get as long
/// (`crate::http::REQUEST_TIMEOUT` is the same 10 s).
pub const QUEUE_BUDGET: Duration = Duration::from_secs(10);

/// Why a message was not stored. The client is told; nothing was sent to
/// the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the server is shutting down; the message was not sent")]
    Closed,
    #[error("the database is too slow to take the message now; it was not stored, send it again")]
    Busy,
    #[error("the message could not be stored; send it again")]
    Store,
}

/// A message that was not stored: why, and the message as the writer
/// stamped it when the outcome is in doubt (a write the database did not
/// answer, which may still land) or when it was a retry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unstored {
    pub error: AppendError,
    pub attempted: Option<Message>,
}

/// What is handed to the log: a new message, stamped by the writer, or
/// one stamped by an earlier attempt whose outcome is in doubt, sent again
/// as it was (stored only if its id is not already).
#[derive(Debug, Clone)]
pub enum Entry {
    Draft(Draft),
    Retry(Message),
}

impl Entry {
    /// What a refusal reports as attempted: a retry's message, which an
    /// earlier attempt may have stored; nothing for a draft never stamped.
    fn attempted(self) -> Option<Message> {
        match self {
            Entry::Retry(message) => Some(message),
            Entry::Draft(_) => None,
        }
    }
}

impl From<AppendError> for Refusal {
    /// What the sender is told: the same over a socket and over HTTP.
    fn from(err: AppendError) -> Self {
        let code = match err {
            AppendError::Closed => Code::ShuttingDown,
            AppendError::Busy | AppendError::Store => Code::Unavailable,
        };
        code.with(err.to_string())
    }
}

struct Request {
    entry: Entry,
    /// Past this, the writer refuses the message unstored.
    deadline: Instant,
    stored: oneshot::Sender<Result<Message, Unstored>>,
}

impl Request {
    /// Answers the sender that the message was not stored, for `error`.
    fn refuse(self, error: AppendError) {
        let attempted = self.entry.attempted();
        self.stored.send(Err(Unstored { error, attempted })).ok();
    }
}

/// Timeouts of the writer.
#[derive(Debug, Clone, Copy)]
pub struct WriterTimeouts {
    /// How long one write may take.
    pub write: Duration,
    /// After shutdown begins, how long queued messages are still stored;
    /// the rest are refused `shutting_down`, unstored.
    pub drain: Duration,
}

/// The sending side of the log, cheap to clone.
#[derive(Clone)]
pub struct MessageLog {
    requests: mpsc::Sender<Request>,
    closed: Arc<AtomicBool>,
}

/// The writer's side of the log: hand it to [`write()`].
pub struct Queue(mpsc::Receiver<Request>);

impl MessageLog {
    /// A log and its queue. Messages appended before [`write()`] runs wait
    /// in the queue.
    pub fn new() -> (Self, Queue) {
        let (requests, queue) = mpsc::channel(QUEUE);
        let closed = Arc::default();
        (MessageLog { requests, closed }, Queue(queue))
    }

    /// Refuses every message from now on (`shutting_down`); those already
    /// queued are still stored. The first step of shutdown.
    pub fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
    }

    /// Stores a message; returns it, with its id and time, once it is
    /// committed and has been published.
    pub async fn append(&self, draft: Draft) -> Result<Message, AppendError> {
        self.submit(Entry::Draft(draft))
            .await
            .map_err(|unstored| unstored.error)
    }

    /// [`MessageLog::append`] for a new or a retried message, telling what
    /// was attempted when it was not stored.
    pub async fn submit(&self, entry: Entry) -> Result<Message, Unstored> {
        let closed = |entry: Entry| Unstored {
            error: AppendError::Closed,
            attempted: entry.attempted(),
        };
        if self.closed.load(Ordering::SeqCst) {
            return Err(closed(entry));
        }
        let (stored, done) = oneshot::channel();
        let request = Request {
            entry,
            deadline: Instant::now() + QUEUE_BUDGET,
            stored,
        };
        self.requests
            .send(request)
            .await
            .map_err(|mpsc::error::SendError(request)| closed(request.entry))?;
        // A dropped answer means the writer ended without reaching it.
        done.await.map_err(|_| Unstored {
            error: AppendError::Closed,
            attempted: None,
        })?
    }
}

/// The writer task: stores queued messages a group at a time, publishes
/// them, answers their senders, and hands them to the webhook. When
/// `cancel` fires it stops taking messages at once, stores the ones already
/// queued for at most `timeouts.drain` (refusing the rest, unstored), and
/// ends.
pub async fn write<P, F>(
    store: Arc<dyn Store>,
    Queue(mut queue): Queue,
    webhook: Option<WebhookQueue>,
    timeouts: WriterTimeouts,
    cancel: CancellationToken,
    metrics: Metrics,
    mut publish: P,
) where
    P: FnMut(Arc<[Message]>) -> F,
    F: std::future::Future<Output = ()>,
{
    let write_timeout = timeouts.write;
    let mut messages = Vec::new();
    let mut answers = Vec::new();
    // Set when shutdown begins: queued messages are stored until then.
    let mut drain_until: Option<Instant> = None;
    loop {
        let first = match drain_until {
            // Shutdown is looked at first, so a steady stream of messages
            // cannot keep the writer from seeing it.
            None => tokio::select! {
                biased;
                () = cancel.cancelled() => {
                    // No new message from here on; those already queued are
                    // still received, stored and answered below.
                    queue.close();
                    drain_until = Some(Instant::now() + timeouts.drain);
                    queue.recv().await
                }
                request = queue.recv() => request,
            },
            Some(_) => queue.recv().await,
        };
        let Some(first) = first else { break };
        // Stamped here, in the order of the commits, so ids and the order
        // in which rooms hear the messages agree.
        let mut batch = vec![first];
        // Everything that arrived while the last commit ran goes in this one.
        while batch.len() < MAX_MESSAGES_PER_WRITE {
            let Ok(request) = queue.try_recv() else { break };
            batch.push(request);
        }
        let now = Instant::now();
        if drain_until.is_some_and(|until| now >= until) {
            for request in batch {
                request.refuse(AppendError::Closed);
            }
            continue;
        }
        for request in batch {
            // A message that waited past its budget is refused, not stored:
            // its sender may have stopped waiting.
            if now > request.deadline {
                request.refuse(AppendError::Busy);
                continue;
            }
            messages.push(match request.entry {
                Entry::Draft(draft) => Message::new(draft.conversation, draft.user, draft.content),
                Entry::Retry(message) => message,
            });
            answers.push(request.stored);
        }
        if messages.is_empty() {
            continue;
        }
        let started = std::time::Instant::now();
        let result = match tokio::time::timeout(write_timeout, store.add_messages(&messages)).await
        {
            Ok(Ok(())) => {
                metrics.messages_written(messages.len(), started.elapsed());
                Ok(())
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, messages = messages.len(), "storing messages failed");
                Err(AppendError::Store)
            }
            Err(_) => {
                // The commit may still land, unpublished; the sender is told
                // it did not, with the message as attempted, so a retry that
                // sends it again (the API's `Idempotency-Key`) stores it at
                // most once; a plain resend may store it twice, never lose it.
                tracing::warn!(
                    messages = messages.len(),
                    "storing messages took longer than {write_timeout:?}"
                );
                Err(AppendError::Store)
            }
        };
        tracing::debug!(
            messages = messages.len(),
            ok = result.is_ok(),
            "messages written"
        );
        let written: Arc<[Message]> = std::mem::take(&mut messages).into();
        if result.is_ok() {
            publish(written.clone()).await;
        }
        for (answer, message) in answers.drain(..).zip(written.iter()) {
            // A sender that went away (its socket closed) needs no answer.
            let answered = result.map(|()| message.clone()).map_err(|error| Unstored {
                error,
                attempted: Some(message.clone()),
            });
            answer.send(answered).ok();
        }
        if let (Ok(()), Some(webhook)) = (result, &webhook) {
            for message in written.iter() {
                webhook.enqueue(message.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conversation::{Content, ConversationId, HistoryQuery};
    use crate::store::{StoreOptions, connect};
    use crate::user::Username;

    fn draft(text: &str) -> Draft {
        Draft {
            conversation: ConversationId::parse("c").unwrap(),
            user: Username::parse("ada").unwrap(),
            content: Content::parse(text).unwrap(),
        }
    }

    /// Counts the writes that reach the store.
    struct Counting {
        inner: Arc<dyn Store>,
        writes: std::sync::atomic::AtomicUsize,
    }

    #[async_trait::async_trait]
    impl Store for Counting {
        async fn load(
            &self,
        ) -> Result<Vec<(crate::counter::CounterKey, u64)>, crate::store::StoreError> {
            self.inner.load().await
        }
        async fn add(
            &self,
            batch: &crate::store::Batch,
        ) -> Result<crate::store::Applied, crate::store::StoreError> {
            self.inner.add(batch).await
        }
        async fn add_messages(&self, messages: &[Message]) -> Result<(), crate::store::StoreError> {
            self.writes
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.add_messages(messages).await
        }
        async fn history(
            &self,
            conversation: &ConversationId,
            query: HistoryQuery,
        ) -> Result<crate::conversation::History, crate::store::StoreError> {
            self.inner.history(conversation, query).await
        }
        async fn prune_messages(
            &self,
            before_ms: i64,
            limit: u32,
        ) -> Result<u64, crate::store::StoreError> {
            self.inner.prune_messages(before_ms, limit).await
        }
        async fn ping(&self) -> Result<(), crate::store::StoreError> {
            self.inner.ping().await
        }
        fn backend(&self) -> &'static str {
            "counting"
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_messages_share_commits_are_published_in_id_order_and_none_after_close() {
        let store = Arc::new(Counting {
            inner: connect("sqlite::memory:", &StoreOptions::default())
                .await
                .unwrap(),
            writes: Default::default(),
        });
        let cancel = CancellationToken::new();
        let (log, queue) = MessageLog::new();
        let published = Arc::new(std::sync::Mutex::new(Vec::new()));
        let writer = tokio::spawn(write(
            store.clone(),
            queue,
            None,
            WriterTimeouts {
                write: Duration::from_secs(5),
                drain: Duration::from_secs(5),
            },
            cancel.clone(),
            Metrics::new(),
            {
                let published = published.clone();
                move |batch: Arc<[Message]>| {
                    published.lock().unwrap().extend(batch.iter().map(|m| m.id));
                    async {}
                }
            },
        ));
        const SENDS: usize = 500;
        let sends: Vec<_> = (0..SENDS)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(draft(&format!("m{i}"))).await })
            })
            .collect();
        let mut ids = Vec::new();
        for send in sends {
            ids.push(send.await.unwrap().unwrap().id);
        }
        cancel.cancel();
        writer.await.unwrap();
        assert_eq!(log.append(draft("late")).await, Err(AppendError::Closed));
        let writes = store.writes.load(std::sync::atomic::Ordering::SeqCst);
        assert!(
            writes < SENDS / 2,
            "{SENDS} concurrent messages took {writes} writes: no group commit"
        );
        let published = published.lock().unwrap().clone();
        assert_eq!(published.len(), SENDS);
        assert!(
            published.windows(2).all(|pair| pair[0] < pair[1]),
            "published in id order"
        );

        let history = store
            .history(
                &ConversationId::parse("c").unwrap(),
                HistoryQuery {
                    since: None,
                    limit: 1000,
                },
            )
            .await
            .unwrap();
        ids.sort();
        let stored: Vec<_> = history.messages.iter().map(|m| m.id).collect();
        assert_eq!(stored, ids, "every acknowledged message, oldest first");
        assert_eq!(stored, published, "stored in the order published");
        assert!(!history.more);
    }
}
