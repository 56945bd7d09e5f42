//! Who is clicking: JWT sessions for Socket.IO handshakes.
//!
//! Tokens are HS256 JWTs whose `sub` is the username and whose `exp` is
//! required; an optional `conversations` claim lists the only conversations
//! the bearer may join. Another backend can issue compatible tokens with the same
//! secret (see the README). With `--auth open` a handshake may also just name
//! a username, or nothing at all (anonymous).

use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::clock::unix_now;
pub use crate::config::AuthMode;
use crate::config::MIN_SECRET_LEN;
use crate::conversation::ConversationId;
use crate::refusal::{Code, Refusal};
use crate::user::Username;

/// Clock skew tolerated on `nbf` and `iat`, in seconds. None is allowed on
/// `exp`: a session ends at its token's `exp`, so a token is refused from
/// that second on, by the handshake, by `refresh` and by the expiry timer
/// alike.
pub const LEEWAY_SECS: u64 = 5;

/// The latest `exp` accepted: the last second of the year 9999. A later
/// one is no real expiry (and past 2^63 seconds it is no time the system
/// clock can hold), so such a token is refused as invalid.
pub const MAX_EXP: u64 = 253_402_300_799;

/// Longest token accepted. Real tokens are a few hundred bytes; the limit
/// keeps a client from making the server verify megabytes.
pub const MAX_TOKEN_LEN: usize = 4096;

/// The authentication policy of a running server.
#[derive(Debug)]
pub struct Auth {
    pub mode: AuthMode,
    pub tokens: Tokens,
    /// Whether `POST /api/session` issues tokens to anyone.
    pub guest_login: bool,
}

/// Why a handshake, a refresh or a token was refused. The `Display` text is
/// what the client sees in `connect_error`, so it stays short and generic.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token where one is required.
    #[error("unauthorized")]
    Missing,
    /// Malformed, badly signed, wrong algorithm, too large, or a bad `sub`.
    #[error("unauthorized")]
    Invalid,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    /// An open-mode handshake named an invalid username.
    #[error("invalid username")]
    InvalidUsername,
}

impl From<AuthError> for Refusal {
    /// A refused handshake or `refresh`: the message is the error's short
    /// text, the code says which rule refused it.
    fn from(err: AuthError) -> Self {
        let code = match err {
            AuthError::Missing | AuthError::Invalid => Code::Unauthorized,
            AuthError::Expired => Code::TokenExpired,
            AuthError::NotYetValid => Code::TokenNotYetValid,
            AuthError::InvalidUsername => Code::InvalidUsername,
        };
        code.with(err.to_string())
    }
}

/// The claims tally reads and writes.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    /// The username.
    pub sub: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Issued at, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, seconds since the Unix epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// When present, the only conversations the bearer may join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversations: Option<Vec<String>>,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub username: Username,
    /// When the token stops being valid, seconds since the Unix epoch.
    pub expires_at: u64,
    /// The `conversations` claim: when present, the only conversations this
    /// session may join (how a backend gives each user a private one).
    pub conversations: Option<Arc<[ConversationId]>>,
}

/// A freshly issued token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct IssuedToken {
    pub token: String,
    pub username: Username,
    /// Unix seconds.
    pub expires_at: u64,
}

/// Signs and verifies tokens with one HS256 secret.
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens")
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl Tokens {
    pub fn new(secret: &[u8], ttl: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        // jsonwebtoken applies one leeway to both `exp` and `nbf`; tally
        // wants none on `exp` and some on `nbf`, so it checks the times
        // itself in `verify`. The claims must still be present.
        validation.leeway = 0;
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.set_required_spec_claims(&["exp", "sub"]);
        // No other claim is read (README): a backend's token that names an
        // audience or an issuer for its own purposes is still valid here.
        // jsonwebtoken would refuse any `aud` when no audience is set.
        validation.validate_aud = false;
        Tokens {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            ttl,
        }
    }

    /// A random secret, for open mode without `--jwt-secret`. Tokens signed
    /// with it stop working when the process restarts.
    pub fn random_secret() -> Vec<u8> {
        let mut secret = vec![0; MIN_SECRET_LEN];
        getrandom::fill(&mut secret).expect("the operating system provides random bytes");
        secret
    }

    /// Issues a token for `username` valid for the configured lifetime.
    pub fn issue(&self, username: Username) -> Result<IssuedToken, jsonwebtoken::errors::Error> {
        let now = unix_now();
        let expires_at = now + self.ttl.as_secs().max(1);
        let claims = Claims {
            sub: username.as_str().to_string(),
            exp: expires_at,
            iat: Some(now),
            nbf: None,
            conversations: None,
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)?;
        Ok(IssuedToken {
            token,
            username,
            expires_at,
        })
    }

    /// Checks a token: size, algorithm (HS256 only; `none` is refused),
    /// signature, `exp` (required), `nbf` and `iat`, and that `sub` is a
    /// valid username.
    pub fn verify(&self, token: &str) -> Result<Session, AuthError> {
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Invalid);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => AuthError::NotYetValid,
                _ => AuthError::Invalid,
            })?
            .claims;
        let now = unix_now();
        if claims.exp <= now {
            return Err(AuthError::Expired);
        }
        if claims.exp > MAX_EXP {
            return Err(AuthError::Invalid);
        }
        // A token not valid yet, or issued in the future, comes from a
        // skewed clock (tolerated a little) or a forger.
        let too_early = |at: Option<u64>| at.is_some_and(|at| at > now + LEEWAY_SECS);
        if too_early(claims.nbf) || too_early(claims.iat) {
            return Err(AuthError::NotYetValid);
        }
        let username = Username::parse(&claims.sub).map_err(|_| AuthError::Invalid)?;
        // A claim naming an invalid id is a broken token, not an empty list.
        let conversations = claims
            .conversations
            .map(|ids| {
                ids.iter()
                    .map(|id| ConversationId::parse(id))
                    .collect::<Result<Arc<[_]>, _>>()
            })
            .transpose()
            .map_err(|_| AuthError::Invalid)?;
        Ok(Session {
            username,
            expires_at: claims.exp,
            conversations,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn sign(claims: &serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    #[test]
    fn issued_tokens_verify() {
        let tokens = Tokens::new(SECRET, Duration::from_secs(60));
        let issued = tokens.issue(Username::parse("Ada").unwrap()).unwrap();
        let session = tokens.verify(&issued.token).unwrap();
        assert_eq!(session.username.as_str(), "Ada");
        assert_eq!(session.expires_at, issued.expires_at);
    }

    #[test]
    fn every_bad_token_is_refused_with_its_reason() {
        let tokens = Tokens::new(SECRET, Duration::from_secs(60));
        let now = unix_now();
        let good = serde_json::json!({"sub": "ada", "exp": now + 60});
        let cases = [
            ("".to_string(), AuthError::Invalid),
            ("not.a.jwt".to_string(), AuthError::Invalid),
            (
                sign(&good, Algorithm::HS256, b"another-secret-another-secret-xx"),
                AuthError::Invalid,
            ),
            (sign(&good, Algorithm::HS512, SECRET), AuthError::Invalid),
            (
                sign(&serde_json::json!({"sub": "ada"}), Algorithm::HS256, SECRET),
                AuthError::Invalid,
            ),
            (
                sign(
                    &serde_json::json!({"sub": "not valid!", "exp": now + 60}),
                    Algorithm::HS256,
                    SECRET,
                ),
                AuthError::Invalid,
            ),
            (
                sign(
                    &serde_json::json!({"sub": "ada", "exp": now - 60}),
                    Algorithm::HS256,
                    SECRET,
                ),
                AuthError::Expired,
            ),
            (
                sign(
                    &serde_json::json!({"sub": "ada", "exp": now + 600, "nbf": now + 300}),
                    Algorithm::HS256,
                    SECRET,
                ),
                AuthError::NotYetValid,
            ),
            (
                sign(
                    &serde_json::json!({"sub": "ada", "exp": now + 600, "iat": now + 300}),
                    Algorithm::HS256,
                    SECRET,
                ),
                AuthError::NotYetValid,
            ),
            ("x".repeat(MAX_TOKEN_LEN + 1), AuthError::Invalid),
            // An `exp` no clock can hold (it once panicked the expiry timer).
            (
                sign(
                    &serde_json::json!({"sub": "ada", "exp": 18_446_744_073_709_551_000u64}),
                    Algorithm::HS256,
                    SECRET,
                ),
                AuthError::Invalid,
            ),
            (
                sign(
                    &serde_json::json!({"sub": "ada", "exp": MAX_EXP + 1}),
                    Algorithm::HS256,
                    SECRET,
                ),
                AuthError::Invalid,
            ),
        ];
        for (token, reason) in cases {
            assert_eq!(tokens.verify(&token), Err(reason.clone()), "{token}");
        }
        // alg "none": an unsigned token with a valid-looking payload.
        let unsigned = format!(
            "{}.{}.",
            base64url(br#"{"alg":"none","typ":"JWT"}"#),
            base64url(format!(r#"{{"sub":"ada","exp":{}}}"#, now + 60).as_bytes())
        );
        assert_eq!(tokens.verify(&unsigned), Err(AuthError::Invalid));
    }

    #[test]
    fn small_clock_skew_is_tolerated_on_nbf_and_iat_only() {
        let tokens = Tokens::new(SECRET, Duration::from_secs(60));
        let now = unix_now();
        let verify =
            |claims: serde_json::Value| tokens.verify(&sign(&claims, Algorithm::HS256, SECRET));
        assert!(
            verify(
                serde_json::json!({"sub": "ada", "exp": now + 60, "nbf": now + 2, "iat": now + 2})
            )
            .is_ok()
        );
        // The session timer fires at `exp`: a token that a handshake or a
        // `refresh` accepted must not already be past it.
        assert_eq!(
            verify(serde_json::json!({"sub": "ada", "exp": now - 2})),
            Err(AuthError::Expired)
        );
        assert_eq!(
            verify(serde_json::json!({"sub": "ada", "exp": now})),
            Err(AuthError::Expired)
        );
    }

    fn base64url(bytes: &[u8]) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn the_conversations_claim_is_read_and_checked() {
        let tokens = Tokens::new(SECRET, Duration::from_secs(60));
        let exp = unix_now() + 60;
        let with = sign(
            &serde_json::json!({"sub": "ada", "exp": exp, "conversations": ["coach:ada", "team"]}),
            Algorithm::HS256,
            SECRET,
        );
        let allowed = tokens.verify(&with).unwrap().conversations.unwrap();
        assert_eq!(allowed.len(), 2);
        assert_eq!(allowed[0].as_str(), "coach:ada");
        let without = sign(
            &serde_json::json!({"sub": "ada", "exp": exp}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(tokens.verify(&without).unwrap().conversations, None);
        let broken = sign(
            &serde_json::json!({"sub": "ada", "exp": exp, "conversations": ["no spaces"]}),
            Algorithm::HS256,
            SECRET,
        );
        assert_eq!(tokens.verify(&broken), Err(AuthError::Invalid));
    }
}
