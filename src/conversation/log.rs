//! The message log: every chat message is stored before anyone hears of it.
//!
//! Handlers hand a [`Message`] to [`MessageLog::append`] and wait. One writer
//! task takes every message waiting at that moment (up to
//! [`MAX_MESSAGES_PER_WRITE`]) and stores them with one statement, so one
//! commit (group commit): a burst of messages costs a few round trips to the
//! database, not one each, and each sender waits at most for the commit in
//! progress plus its own. Only after the commit does `append` return, so an
//! acknowledged message survives a crash. Stored messages then go to the
//! webhook, if one is set.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::Message;
use super::webhook::WebhookQueue;
use crate::store::{MAX_MESSAGES_PER_WRITE, Store};

/// Messages waiting for the writer. When it is full, senders wait: that is
/// the back-pressure a database slower than the chat puts on posters.
const QUEUE: usize = 10_000;

/// Why a message was not stored. The client is told; nothing was sent to
/// the conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    #[error("the server is shutting down; the message was not sent")]
    Closed,
    #[error("the message could not be stored; send it again")]
    Store,
}

struct Request {
    message: Message,
    stored: oneshot::Sender<Result<(), AppendError>>,
}

/// The sending side of the log, cheap to clone.
#[derive(Clone)]
pub struct MessageLog {
    requests: mpsc::Sender<Request>,
}

/// The writer's side of the log: hand it to [`write`].
pub struct Queue(mpsc::Receiver<Request>);

impl MessageLog {
    /// A log and its queue. Messages appended before [`write`] runs wait
    /// in the queue.
    pub fn new() -> (Self, Queue) {
        let (requests, queue) = mpsc::channel(QUEUE);
        (MessageLog { requests }, Queue(queue))
    }

    /// Stores `message`; returns once it is committed.
    pub async fn append(&self, message: Message) -> Result<Message, AppendError> {
        let (stored, done) = oneshot::channel();
        self.requests
            .send(Request {
                message: message.clone(),
                stored,
            })
            .await
            .map_err(|_| AppendError::Closed)?;
        // A dropped answer means the writer ended without reaching it.
        done.await.map_err(|_| AppendError::Closed)??;
        Ok(message)
    }
}

/// The writer task: stores queued messages a group at a time, answers their
/// senders, and hands them to the webhook. When `cancel` fires it stops
/// taking messages, stores the ones already queued, and ends.
pub async fn write(
    store: Arc<dyn Store>,
    Queue(mut queue): Queue,
    webhook: Option<WebhookQueue>,
    write_timeout: Duration,
    cancel: CancellationToken,
) {
    let mut messages = Vec::new();
    let mut answers = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            request = queue.recv() => request,
            () = cancel.cancelled() => {
                // No new message from here on; those already queued are
                // still received, stored and answered below.
                queue.close();
                queue.recv().await
            }
        };
        let Some(first) = first else { break };
        messages.push(first.message);
        answers.push(first.stored);
        // Everything that arrived while the last commit ran goes in this one.
        while messages.len() < MAX_MESSAGES_PER_WRITE {
            let Ok(request) = queue.try_recv() else { break };
            messages.push(request.message);
            answers.push(request.stored);
        }
        let result = match tokio::time::timeout(write_timeout, store.add_messages(&messages)).await
        {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => {
                tracing::warn!(error = %err, messages = messages.len(), "storing messages failed");
                Err(AppendError::Store)
            }
            Err(_) => {
                // The commit may still land; the sender is told it did not,
                // so at worst a resent message is stored twice, never lost.
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
        for answer in answers.drain(..) {
            // A sender that went away (its socket closed) needs no answer.
            answer.send(result).ok();
        }
        let written = std::mem::take(&mut messages);
        if let (Ok(()), Some(webhook)) = (result, &webhook) {
            for message in written {
                webhook.enqueue(message);
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

    fn message(text: &str) -> Message {
        Message::new(
            ConversationId::parse("c").unwrap(),
            Username::parse("ada").unwrap(),
            Content::parse(text).unwrap(),
        )
    }

    #[tokio::test]
    async fn concurrent_messages_are_all_stored_in_order_and_none_after_close() {
        let store = connect("sqlite::memory:", &StoreOptions::default())
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let (log, queue) = MessageLog::new();
        let writer = tokio::spawn(write(
            store.clone(),
            queue,
            None,
            Duration::from_secs(5),
            cancel.clone(),
        ));
        let sends: Vec<_> = (0..200)
            .map(|i| {
                let log = log.clone();
                tokio::spawn(async move { log.append(message(&format!("m{i}"))).await })
            })
            .collect();
        let mut ids = Vec::new();
        for send in sends {
            ids.push(send.await.unwrap().unwrap().id);
        }
        cancel.cancel();
        writer.await.unwrap();
        assert_eq!(log.append(message("late")).await, Err(AppendError::Closed));

        let history = store
            .history(
                &ConversationId::parse("c").unwrap(),
                HistoryQuery {
                    since: None,
                    limit: 500,
                },
            )
            .await
            .unwrap();
        ids.sort();
        let stored: Vec<_> = history.messages.iter().map(|m| m.id).collect();
        assert_eq!(stored, ids, "every acknowledged message, oldest first");
        assert!(!history.more);
    }
}
