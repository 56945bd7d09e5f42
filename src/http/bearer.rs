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
        return Err(ApiError::not_found());
    };
    // The scheme is case-insensitive (RFC 9110); the key is compared
    // without surrounding whitespace on both sides, so a key read from a
    // file with its newline still matches.
    let presented = headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim_start().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, key)| key)
        .ok_or_else(ApiError::unauthorized)?;
    let expected = Sha256::digest(expected.trim().as_bytes());
    let presented = Sha256::digest(presented.trim().as_bytes());
    if bool::from(expected.ct_eq(&presented)) {
        Ok(())
    } else {
        Err(ApiError::unauthorized())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::refusal::Code;

    /// The code `authorize` answers with, or `None` when it lets through.
    fn refused(expected: Option<&str>, headers: &HeaderMap) -> Option<Code> {
        authorize(expected, headers).err().map(|err| err.code())
    }

    fn with(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn the_scheme_is_case_insensitive_and_the_key_must_match() {
        let key = Some("s3cret-key");
        assert!(authorize(key, &with("Bearer s3cret-key")).is_ok());
        assert!(authorize(key, &with("bearer s3cret-key")).is_ok());
        assert!(authorize(key, &with("BEARER  s3cret-key ")).is_ok());
        assert_eq!(
            refused(key, &with("Bearer s3cret-kez")),
            Some(Code::Unauthorized)
        );
        assert_eq!(
            refused(key, &with("Basic s3cret-key")),
            Some(Code::Unauthorized)
        );
        assert_eq!(refused(key, &HeaderMap::new()), Some(Code::Unauthorized));
        assert_eq!(
            refused(None, &with("Bearer s3cret-key")),
            Some(Code::NotFound)
        );
    }

    #[test]
    fn a_configured_key_read_with_its_newline_still_matches() {
        assert!(authorize(Some("s3cret-key\n"), &with("Bearer s3cret-key")).is_ok());
    }
}
