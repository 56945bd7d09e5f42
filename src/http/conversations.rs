//! The backend's side of conversations: `GET /api/conversations/{id}` reads
//! a conversation and `POST /api/conversations/{id}/messages` posts to it,
//! both with `Authorization: Bearer <--api-key>`. With them (and the
//! message webhook) a bot or an AI assistant converses without holding a
//! socket. Without `--api-key` both answer 404, as if they did not exist.
//!
//! A post may carry an `Idempotency-Key` ([`crate::idempotency`]): a retry
//! with the same key and body gets the first answer and stores nothing
//! new. A post is not cut short by the API's 10 s limit: it is answered
//! once the message is stored or refused (the log refuses, unstored, a
//! message it could not take within its own budget), so a `201` is never
//! missed for a message that was stored.

use axum::Json;
use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::conversation::{Content, ConversationId, Draft, HistoryQuery, Message, MessageId};
use crate::idempotency::{Claim, fingerprint};
use crate::persist::message_log::Entry;
use crate::refusal::{Code, Refusal};
use crate::state::AppState;
use crate::user::Username;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    super::bearer::authorize(state.api_key.as_deref(), headers)
}

fn conversation(raw: &str) -> Result<ConversationId, ApiError> {
    ConversationId::parse(raw).map_err(|err| Code::InvalidConversation.with(err.to_string()).into())
}

#[derive(Debug, Deserialize)]
pub struct ReadQuery {
    since: Option<String>,
    limit: Option<usize>,
}

/// A conversation as the backend reads it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationView {
    conversation_id: ConversationId,
    total: u64,
    online: u64,
    messages: Vec<Message>,
    more: bool,
}

/// `GET /api/conversations/{id}?since=<messageId>&limit=N`: the
/// conversation's total, sockets online and a page of history (the latest
/// messages, or those after `since`; `limit` defaults to and is at most
/// `--history-size`).
pub async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<ConversationView>, ApiError> {
    authorize(&state, &headers)?;
    let room = conversation(&id)?;
    let Query(query) = query.map_err(|_| {
        Code::InvalidQuery.with(format!(
            "limit must be a whole number from 1 to {}",
            state.history_size
        ))
    })?;
    let limit = match query.limit {
        None => state.history_size,
        Some(limit) if (1..=state.history_size).contains(&limit) => limit,
        Some(_) => {
            return Err(Code::InvalidQuery
                .with(format!("limit must be from 1 to {}", state.history_size))
                .into());
        }
    };
    let since = query
        .since
        .map(|raw| MessageId::parse(&raw))
        .transpose()
        .map_err(|err| Code::InvalidQuery.with(err.to_string()))?;
    let history = state
        .store
        .history(&room, HistoryQuery { since, limit })
        .await?;
    Ok(Json(ConversationView {
        total: state.counters.room_total(&room),
        online: state.counters.online(&room),
        conversation_id: room,
        messages: history.messages,
        more: history.more,
    }))
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostRequest {
    user_id: String,
    content: String,
}

/// The header a retried post carries to be stored at most once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /api/conversations/{id}/messages {"userId", "content"}`: stores
/// the message and sends it to the conversation's sockets; answers `201`
/// with the message as the room received it (and `Idempotent-Replayed:
/// true` when it is the answer to an earlier post with the same key).
pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<PostRequest>, JsonRejection>,
) -> Result<(StatusCode, HeaderMap, Json<Message>), ApiError> {
    authorize(&state, &headers)?;
    let room = conversation(&id)?;
    let Json(request) = body.map_err(|rejection| match rejection.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::too_large(),
        _ => Code::InvalidPayload
            .with(format!(
                "expected a JSON body {{\"userId\": \"…\", \"content\": \"…\"}}: {}",
                rejection.body_text()
            ))
            .into(),
    })?;
    let user = Username::parse(&request.user_id).map_err(|_| ApiError::invalid_username())?;
    let content = Content::parse(&request.content).map_err(Refusal::from)?;
    let key = match headers.get(IDEMPOTENCY_KEY) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| Code::BadRequest.with("the Idempotency-Key is not visible ASCII"))?,
        ),
        None => None,
    };
    let draft = Draft {
        conversation: room,
        user,
        content,
    };
    let Some(key) = key else {
        // Stored, then sent to the conversation's sockets, as a socket's is.
        let message = state.messages.append(draft).await.map_err(Refusal::from)?;
        return Ok((StatusCode::CREATED, HeaderMap::new(), Json(message)));
    };
    // The fingerprint is of the request as it was validated, so the same
    // message sent with other line endings or padding is the same request.
    let print = fingerprint(&[
        draft.conversation.as_str(),
        draft.user.as_str(),
        draft.content.as_str(),
    ]);
    let entry = match state.idempotency.claim(key, print)? {
        Claim::Replay(message) => {
            let mut replayed = HeaderMap::new();
            replayed.insert(
                "idempotent-replayed",
                axum::http::HeaderValue::from_static("true"),
            );
            return Ok((StatusCode::CREATED, replayed, Json(message)));
        }
        Claim::Retry(message) => Entry::Retry(message),
        Claim::New => Entry::Draft(draft),
    };
    match state.messages.submit(entry).await {
        Ok(message) => {
            state.idempotency.finish(key, Ok(&message));
            Ok((StatusCode::CREATED, HeaderMap::new(), Json(message)))
        }
        Err(unstored) => {
            state
                .idempotency
                .finish(key, Err(unstored.attempted.as_ref()));
            Err(Refusal::from(unstored.error).into())
        }
    }
}
