//! The message webhook: every stored message, POSTed to a backend.
//!
//! This is how a bot or an AI assistant hears a conversation without holding
//! a socket (it answers through `POST /api/conversations/{id}/messages`).
//! Each message is sent as its JSON (the same object the room receives),
//! signed with HMAC-SHA256 over the raw body in `X-Tally-Signature:
//! sha256=<hex>`, the convention GitHub and Stripe use. Deliveries leave a
//! bounded queue one at a time, in order; a failed one (network error,
//! timeout, `408`, `429` or `5xx`) is retried with exponential backoff. The
//! chat never waits for the webhook: when the queue is full the new message
//! is not delivered (it is still stored), and a warning says so.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::mpsc;

use crate::conversation::Message;

/// Messages waiting for delivery; beyond this, new ones are skipped.
const QUEUE: usize = 10_000;

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "x-tally-signature";

/// How deliveries are retried.
#[derive(Debug, Clone, Copy)]
pub struct Retry {
    /// Wait before the first retry; doubled after each failure.
    pub first: Duration,
    /// Longest wait between two attempts.
    pub max: Duration,
    /// Attempts per message, the first included; then it is given up.
    pub attempts: u32,
}

impl Default for Retry {
    fn default() -> Self {
        // 0.5 + 1 + 2 + … + 30 s: a receiver may be away for about three
        // minutes before a message is given up.
        Retry {
            first: Duration::from_millis(500),
            max: Duration::from_secs(30),
            attempts: 10,
        }
    }
}

/// Where and how to deliver.
#[derive(Clone)]
pub struct WebhookConfig {
    pub url: reqwest::Url,
    pub secret: String,
    pub retry: Retry,
    /// Longest one attempt may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Neither the secret nor the URL (it may carry a token) is shown.
        f.debug_struct("WebhookConfig")
            .field("host", &self.url.host_str())
            .field("retry", &self.retry)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The sending side: hands stored messages to the delivery task.
#[derive(Clone)]
pub struct WebhookQueue {
    messages: mpsc::Sender<Message>,
}

/// The delivery task's side of the queue: hand it to [`deliver`].
pub struct Outbox(mpsc::Receiver<Message>);

impl WebhookQueue {
    /// A queue and its outbox.
    pub fn new() -> (Self, Outbox) {
        let (messages, outbox) = mpsc::channel(QUEUE);
        (WebhookQueue { messages }, Outbox(outbox))
    }

    /// Queues a stored message, never waiting.
    pub fn enqueue(&self, message: Message) {
        if let Err(err) = self.messages.try_send(message) {
            let message = err.into_inner();
            tracing::warn!(
                message_id = %message.id,
                "webhook queue full ({QUEUE} messages): this message will not be delivered"
            );
        }
    }
}

/// `sha256=<hex>` of the HMAC-SHA256 of `body` under `secret`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The delivery task: POSTs each queued message, retrying as configured.
/// It ends when every [`WebhookQueue`] is dropped and the outbox is empty.
pub async fn deliver(config: WebhookConfig, Outbox(mut queue): Outbox) {
    let client = match reqwest::Client::builder()
        .timeout(config.timeout)
        // A followed 301, 302 or 303 turns the POST into a GET without its
        // body, whose 200 would count as delivered: a redirect is reported
        // instead.
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("tally/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "cannot build the webhook client; messages will not be delivered");
            return;
        }
    };
    while let Some(message) = queue.recv().await {
        let body = match serde_json::to_vec(&message) {
            Ok(body) => body,
            Err(err) => {
                tracing::error!(error = %err, "cannot encode a message for the webhook");
                continue;
            }
        };
        let signature = signature(config.secret.as_bytes(), &body);
        let mut wait = config.retry.first;
        for attempt in 1..=config.retry.attempts {
            let sent = client
                .post(config.url.clone())
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE_HEADER, &signature)
                .header("x-tally-delivery", message.id.to_string())
                .body(body.clone())
                .send()
                .await;
            let outcome = match sent {
                Ok(response) if response.status().is_success() => break,
                Ok(response) => {
                    let status = response.status();
                    let again = status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                    if status.is_redirection() {
                        // Every message would be redirected the same way.
                        let to = response
                            .headers()
                            .get(reqwest::header::LOCATION)
                            .and_then(|to| to.to_str().ok())
                            .unwrap_or("nowhere")
                            .to_owned();
                        tracing::warn!(message_id = %message.id, %status, location = %to, "webhook answered with a redirect; not followed or retried (set --message-webhook to the address it names)");
                        break;
                    }
                    if !again {
                        // The receiver refused this message for good (a 4xx):
                        // sending it again would be refused again.
                        tracing::warn!(message_id = %message.id, %status, "webhook refused a message; not retried");
                        break;
                    }
                    format!("status {status}")
                }
                // Without the URL: it may carry a token of the receiver's.
                Err(err) => err.without_url().to_string(),
            };
            if attempt == config.retry.attempts {
                tracing::warn!(message_id = %message.id, attempts = attempt, error = %outcome, "webhook delivery given up");
                break;
            }
            tracing::debug!(message_id = %message.id, attempt, error = %outcome, retry_in = ?wait, "webhook delivery failed");
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(config.retry.max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_match_a_known_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
