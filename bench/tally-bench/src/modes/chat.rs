//! `chat`: N members in one conversation, M messages per second spread over
//! them. How long from a message's send until every member has it, and does
//! every member get every message?

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::cancel_after;
use crate::client::{Client, Incoming, MESSAGE_PREFIX};
use crate::report::{Latency, histogram, record, summarize};
use crate::{BenchError, SETTLE, Target, connect_all, micros_since};

#[derive(Debug, Serialize)]
pub struct ChatReport {
    pub mode: &'static str,
    pub members: usize,
    pub target_rate_per_s: f64,
    /// Messages sent.
    pub messages: u64,
    /// Messages the server acknowledged as stored.
    pub acked: u64,
    /// Messages the server refused.
    pub refused: u64,
    /// Message sent → its `ack`, at the sender.
    pub ack: Latency,
    /// Message sent → a member receives it, one sample per (message, member).
    pub delivery: Latency,
    /// [`ChatReport::delivery`] for the (message, member) pairs whose
    /// sender is on another node (several `--url`s only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_other_nodes: Option<Latency>,
    /// (message, member) pairs that never arrived.
    pub lost: u64,
}

/// A member's tally at the end.
struct Member {
    /// Its index in the load (message `n` is sent by member `n % members`).
    index: usize,
    /// (message number, µs since start) of each message received.
    received: Vec<(u64, u64)>,
    /// µs from send to ack, for the messages this member sent.
    acks: Vec<u64>,
    refused: u64,
}

/// `members` members join `conversation`; messages leave at `rate` per
/// second for `duration`, member `i % members` sending message `i`.
pub async fn chat(
    target: &Target,
    members: usize,
    rate: f64,
    duration: Duration,
    conversation: &str,
) -> Result<ChatReport, BenchError> {
    // Posting needs a name: members are users even without --users.
    let named = Target {
        users: Some(target.users.clone().unwrap_or_else(|| "member".into())),
        ..target.clone()
    };
    let (mut clients, _) = connect_all(&named, members, "connecting").await?;
    let bar = target.progress.bar(members as u64, "joining");
    for client in &mut clients {
        join(client, conversation).await?;
        bar.inc(1);
    }
    bar.finish_and_clear();

    let messages = (rate * duration.as_secs_f64()).ceil() as u64;
    let sent_at: Arc<Vec<AtomicU64>> = Arc::new((0..messages).map(|_| AtomicU64::new(0)).collect());
    let start = Instant::now();
    let stop = CancellationToken::new();
    let mut outboxes = Vec::with_capacity(members);
    let mut tasks = JoinSet::new();
    for (index, client) in clients.into_iter().enumerate() {
        let (tx, rx) = mpsc::unbounded_channel();
        outboxes.push(tx);
        tasks.spawn(member(
            index,
            client,
            conversation.to_string(),
            rx,
            messages,
            sent_at.clone(),
            start,
            stop.clone(),
        ));
    }

    // Open loop: messages leave on schedule whatever the acks do.
    let bar = target.progress.bar(messages, "chatting");
    let mut pace = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    for n in 0..messages {
        pace.tick().await;
        sent_at[n as usize].store(micros_since(start), Ordering::SeqCst);
        outboxes[n as usize % members].send(n).ok();
        bar.inc(1);
    }
    bar.finish_and_clear();
    drop(outboxes);
    // Members that never get every message are cut off after SETTLE.
    let timer = cancel_after(&stop, SETTLE);
    let mut delivery = histogram();
    let mut remote = histogram();
    let mut acks = histogram();
    let (mut received, mut refused) = (0, 0);
    while let Some(joined) = tasks.join_next().await {
        let member = joined??;
        for (n, at) in &member.received {
            let sent = sent_at[*n as usize].load(Ordering::SeqCst);
            record(&mut delivery, at.saturating_sub(sent));
            let sender = *n as usize % members;
            if named.node(sender) != named.node(member.index) {
                record(&mut remote, at.saturating_sub(sent));
            }
        }
        received += member.received.len() as u64;
        for micros in member.acks {
            record(&mut acks, micros);
        }
        refused += member.refused;
    }
    timer.abort();
    Ok(ChatReport {
        mode: "chat",
        members,
        target_rate_per_s: rate,
        messages,
        acked: acks.len(),
        refused,
        ack: summarize(&acks),
        delivery: summarize(&delivery),
        delivery_other_nodes: (target.urls.len() > 1).then(|| summarize(&remote)),
        lost: messages * members as u64 - received,
    })
}

/// Joins the conversation and waits for the answer.
async fn join(client: &mut Client, conversation: &str) -> Result<(), BenchError> {
    let id = client
        .emit(
            "join_conversation",
            &json!({ "conversationId": conversation }),
        )
        .await?;
    let answered = async {
        loop {
            if let Incoming::Reply { id: got, error } = client.recv().await?
                && got == id
            {
                return Ok::<_, BenchError>(error);
            }
        }
    };
    match tokio::time::timeout(SETTLE, answered).await {
        Ok(Ok(false)) => Ok(()),
        Ok(Ok(true)) => Err(BenchError::Refused("join_conversation".into())),
        Ok(Err(err)) => Err(err),
        Err(_) => Err(BenchError::Refused(
            "join_conversation (no answer): the server does not speak the conversation contract"
                .into(),
        )),
    }
}

/// One member: sends the messages handed to it, notes every message it
/// receives, until it has all `messages` and its outbox is closed, or `stop`.
#[allow(clippy::too_many_arguments)]
async fn member(
    index: usize,
    mut client: Client,
    conversation: String,
    mut outbox: mpsc::UnboundedReceiver<u64>,
    messages: u64,
    sent_at: Arc<Vec<AtomicU64>>,
    start: Instant,
    stop: CancellationToken,
) -> Result<Member, BenchError> {
    let mut state = Member {
        index,
        received: Vec::with_capacity(messages as usize),
        acks: Vec::new(),
        refused: 0,
    };
    // Ack id → the message it acknowledges.
    let mut waiting = std::collections::HashMap::new();
    let mut sending = true;
    loop {
        if !sending && waiting.is_empty() && state.received.len() as u64 >= messages {
            break;
        }
        tokio::select! {
            () = stop.cancelled() => break,
            next = outbox.recv(), if sending => match next {
                Some(n) => {
                    let payload = json!({ "conversationId": conversation, "content": format!("{MESSAGE_PREFIX}{n}") });
                    let id = client.emit("message", &payload).await?;
                    waiting.insert(id, n);
                }
                None => sending = false,
            },
            frame = client.recv() => match frame {
                Ok(Incoming::Message(n)) if n < messages => {
                    state.received.push((n, micros_since(start)));
                }
                Ok(Incoming::Reply { id, error }) => {
                    if let Some(n) = waiting.remove(&id) {
                        if error {
                            state.refused += 1;
                        } else {
                            let sent = sent_at[n as usize].load(Ordering::SeqCst);
                            state.acks.push(micros_since(start).saturating_sub(sent));
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            },
        }
    }
    client.close().await;
    Ok(state)
}
