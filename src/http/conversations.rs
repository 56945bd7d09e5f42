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
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::conversation::{Content, ConversationId, Draft, HistoryQuery, Message, MessageId};
use crate::idempotency::{Claim, fingerprint};
use crate::persist::message_log::Entry;
use crate::refusal::{Code, ErrorBody, Refusal};
use crate::state::AppState;
use crate::user::Username;

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    super::bearer::authorize(state.api_key.as_deref(), headers)
}

fn conversation(raw: &str) -> Result<ConversationId, ApiError> {
    ConversationId::parse(raw).map_err(|err| Code::InvalidConversation.with(err.to_string()).into())
}

/// The conversation id of the path; one that is not even text (bad
/// percent-encoding) is as invalid as any other.
fn path_conversation(id: Result<Path<String>, PathRejection>) -> Result<ConversationId, ApiError> {
    match id {
        Ok(Path(id)) => conversation(&id),
        Err(_) => Err(Code::InvalidConversation
            .with("a conversation id is 1 to 64 of A-Z a-z 0-9 _ . : -")
            .into()),
    }
}

/// The largest `limit` a read takes (it reads at most `--history-size`).
const MAX_READ_LIMIT: usize = 1_000_000;

#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ReadQuery {
    /// Only messages after this `messageId`, oldest first.
    #[param(value_type = Option<MessageId>)]
    since: Option<String>,
    /// How many messages, from 1; at most `--history-size` (the default)
    /// are read however many are asked for.
    // The maximum is `MAX_READ_LIMIT` (an attribute takes only a literal).
    #[param(minimum = 1, maximum = 1_000_000)]
    limit: Option<usize>,
}

/// A conversation as the backend reads it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
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
#[utoipa::path(
    get,
    path = "/api/conversations/{id}",
    tag = "conversations",
    params(("id" = ConversationId, Path, description = "A conversation id"), ReadQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The conversation's total, sockets online and a page of history", body = ConversationView),
        (status = 401, description = "`unauthorized`: no key or a wrong one", body = ErrorBody),
        (status = 404, description = "`not_found`: the server has no `--api-key`", body = ErrorBody),
        (status = 422, description = "`invalid_conversation` or `invalid_query`", body = ErrorBody),
        (status = 503, description = "`store_unavailable`", body = ErrorBody),
    )
)]
pub async fn read(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    query: Result<Query<ReadQuery>, QueryRejection>,
) -> Result<Json<ConversationView>, ApiError> {
    authorize(&state, &headers)?;
    let room = path_conversation(id)?;
    let Query(query) = query.map_err(|_| {
        Code::InvalidQuery.with(format!(
            "limit must be a whole number from 1 to {}",
            state.history_size
        ))
    })?;
    // A page is at most `--history-size`: a larger limit reads that much
    // (the answer's `more` says whether there is more), as the document
    // cannot know the server's setting.
    let limit = match query.limit {
        None => state.history_size,
        Some(limit) if !(1..=MAX_READ_LIMIT).contains(&limit) => {
            return Err(Code::InvalidQuery
                .with(format!(
                    "limit must be a whole number from 1 to {MAX_READ_LIMIT}"
                ))
                .into());
        }
        Some(limit) => limit.min(state.history_size),
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

#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostRequest {
    /// The author's username.
    #[schema(pattern = r"^[A-Za-z0-9_.-]{1,32}$")]
    user_id: String,
    /// At most 2,000 characters, and 1 to 2,000 once trimmed, without control characters
    /// (but newline and tab), direction overrides, zero-width spaces or
    /// line separators, and at most 6 combining marks on one character.
    /// The pattern says as much of that as a regular expression can:
    /// something besides white space, and none of the refused characters.
    #[schema(
        pattern = r"^\s*[^\s\x00-\x1f\x7f-\x9f\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff][^\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u061c\u180e\u200b\u200e\u200f\u2028-\u202e\u2060-\u2064\u2066-\u2069\ufeff]*$",
        max_length = 2000
    )]
    content: String,
}

/// The header a retried post carries to be stored at most once.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// `POST /api/conversations/{id}/messages {"userId", "content"}`: stores
/// the message and sends it to the conversation's sockets; answers `201`
/// with the message as the room received it (and `Idempotent-Replayed:
/// true` when it is the answer to an earlier post with the same key).
#[utoipa::path(
    post,
    path = "/api/conversations/{id}/messages",
    tag = "conversations",
    params(
        ("id" = ConversationId, Path, description = "A conversation id"),
        ("Idempotency-Key" = Option<String>, Header, pattern = r"^[!-~]{1,255}$", description = "1 to 255 visible ASCII characters: a retry with the same key and body gets the first answer and stores nothing new"),
    ),
    request_body = PostRequest,
    security(("api_key" = [])),
    responses(
        (status = 201, description = "Stored and sent to the conversation", body = Message),
        (status = 400, description = "`bad_request`: a malformed `Idempotency-Key`", body = ErrorBody),
        (status = 401, description = "`unauthorized`: no key or a wrong one", body = ErrorBody),
        (status = 404, description = "`not_found`: the server has no `--api-key`", body = ErrorBody),
        (status = 409, description = "`idempotency_conflict`", body = ErrorBody),
        (status = 413, description = "`too_large`: over 64 KiB", body = ErrorBody),
        (status = 422, description = "`invalid_conversation`, `invalid_payload`, `invalid_username` or `too_long`", body = ErrorBody),
        (status = 503, description = "`unavailable` (not stored) or `shutting_down`", body = ErrorBody),
    )
)]
pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<String>, PathRejection>,
    body: Result<Json<PostRequest>, JsonRejection>,
) -> Result<(StatusCode, HeaderMap, Json<Message>), ApiError> {
    authorize(&state, &headers)?;
    let room = path_conversation(id)?;
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
    // In a task of its own, so that the outcome is noted under the key
    // even if the poster hangs up first: the key would otherwise stay "in
    // flight", and every retry be refused, until it is forgotten.
    let submitted = tokio::spawn({
        let state = state.clone();
        let key = key.to_string();
        async move {
            let outcome = state.messages.submit(entry).await;
            let noted = match &outcome {
                Ok(message) => Ok(message),
                Err(unstored) => Err(unstored.attempted.as_ref()),
            };
            state.idempotency.finish(&key, noted);
            outcome
        }
    })
    .await
    .map_err(|err| ApiError::Internal(format!("the message task failed: {err}")))?;
    match submitted {
        Ok(message) => Ok((StatusCode::CREATED, HeaderMap::new(), Json(message))),
        Err(unstored) => Err(Refusal::from(unstored.error).into()),
    }
}
