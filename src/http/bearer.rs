//! Bearer keys of the endpoints meant for other programs (`--api-key`,
//! `--admin-token`).

use axum::http::{HeaderMap, header};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::ApiError;

/// Checks `Authorization: Bearer <key>` against `expected`; with no key
/// configured the endpoint does not exist (404). Both sides are hashed
/// first, so the comparison takes the same time whatever the key's length
/// and however much of it a guess gets right.
pub fn authorize(expected: Option<&str>, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::NotFound);
    };
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized)?;
    let expected = Sha256::digest(expected.as_bytes());
    let presented = Sha256::digest(presented.trim().as_bytes());
    if bool::from(expected.ct_eq(&presented)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized)
    }
}
