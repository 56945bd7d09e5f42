//! Usernames: what a valid one looks like and how two are compared.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// The rule, in words, for error messages and docs.
pub const USERNAME_RULE: &str =
    "a username is 1 to 32 characters of A-Z, a-z, 0-9, `_`, `-` and `.`";

/// Longest accepted username, in bytes (all allowed characters are ASCII).
pub const MAX_USERNAME_LEN: usize = 32;

/// A valid username. Two usernames are equal when they differ only in case;
/// the spelling given first is the one kept for display.
///
/// One shared allocation per name: equality, hashing and ordering fold the
/// case as they go instead of keeping a lower-cased copy, which matters when
/// a million users are held in memory.
#[derive(Clone)]
pub struct Username {
    /// As written by the user.
    display: Arc<str>,
}

/// Why a username was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid username: {USERNAME_RULE}")]
pub struct InvalidUsername;

impl Username {
    pub fn parse(raw: &str) -> Result<Self, InvalidUsername> {
        let valid = (1..=MAX_USERNAME_LEN).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
        if !valid {
            return Err(InvalidUsername);
        }
        Ok(Username {
            display: raw.into(),
        })
    }

    /// The spelling to show.
    pub fn as_str(&self) -> &str {
        &self.display
    }

    /// The case-folded identity (rooms, sorting), as a new string.
    pub fn folded(&self) -> String {
        self.display.to_ascii_lowercase()
    }

    /// Orders two names case-insensitively (the leaderboard's tie-break).
    pub fn cmp_folded(&self, other: &Username) -> std::cmp::Ordering {
        self.display
            .bytes()
            .map(|b| b.to_ascii_lowercase())
            .cmp(other.display.bytes().map(|b| b.to_ascii_lowercase()))
    }
}

impl PartialEq for Username {
    fn eq(&self, other: &Self) -> bool {
        self.display.eq_ignore_ascii_case(&other.display)
    }
}

impl Eq for Username {}

impl Hash for Username {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes (its bytes, then a terminator), but case-folded,
        // so names equal without case hash alike. At most 32 bytes.
        let mut folded = [0u8; MAX_USERNAME_LEN];
        let len = self.display.len();
        folded[..len].copy_from_slice(self.display.as_bytes());
        folded[..len].make_ascii_lowercase();
        state.write(&folded[..len]);
        state.write_u8(0xff);
    }
}

impl fmt::Display for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.display)
    }
}

impl fmt::Debug for Username {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Username({:?})", self.display)
    }
}

impl Serialize for Username {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.display)
    }
}

impl utoipa::PartialSchema for Username {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::schema::string_schema(r"^[A-Za-z0-9_.-]{1,32}$", None)
    }
}

impl utoipa::ToSchema for Username {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_names_are_accepted_and_compared_without_case() {
        let a = Username::parse("Ada.L_0-x").unwrap();
        let b = Username::parse("ada.l_0-X").unwrap();
        assert_eq!(a, b);
        assert_eq!(a.as_str(), "Ada.L_0-x");
        assert_eq!(a.folded(), "ada.l_0-x");
        assert!(Username::parse(&"a".repeat(32)).is_ok());
    }

    #[test]
    fn invalid_names_are_refused() {
        for bad in [
            "",
            " ",
            "a b",
            "émile",
            "<script>",
            "x/y",
            &"a".repeat(33),
            "tab\t",
        ] {
            assert_eq!(Username::parse(bad), Err(InvalidUsername), "{bad:?}");
        }
    }
}
