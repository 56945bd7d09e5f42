//! Typed payloads of the Socket.IO contract.
//!
//! | direction | event | payload |
//! |---|---|---|
//! | server → client | `count` | [`Count`] |
//! | client → server | `click` | none (or `{}`), ack → [`Count`] or [`AckError`] |

use std::fmt;

use serde::Serialize;
use serde::de::{Deserialize, Deserializer, SeqAccess, Visitor};
use serde_json::Value;

/// Name of the event carrying the global total.
pub const COUNT: &str = "count";
/// Name of the event a client sends to click.
pub const CLICK: &str = "click";

/// The global total. Totals only grow; a client keeps the largest it has seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Count {
    pub total: u64,
}

/// An ack answer: the data on success, `{"error": {...}}` on failure. Clients
/// tell them apart by the presence of the `error` key.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Ack<T> {
    Ok(T),
    Err(AckError),
}

/// Why a client event was refused.
#[derive(Debug, Serialize)]
pub struct AckError {
    pub error: ErrorBody,
}

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    /// Stable, machine-readable reason, e.g. `bad_request`.
    pub code: &'static str,
    /// Human-readable explanation.
    pub message: String,
}

impl<T> Ack<T> {
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Ack::Err(AckError {
            error: ErrorBody {
                code,
                message: message.into(),
            },
        })
    }
}

/// Every argument of an incoming event, however many there are (zero
/// included). socketioxide hands a tuple-shaped type the whole argument list,
/// while any other type only sees the first argument and fails when there is
/// none; this type asks for the tuple shape so handlers can validate the
/// arguments themselves.
#[derive(Debug, Default, PartialEq)]
pub struct Args(pub Vec<Value>);

impl<'de> Deserialize<'de> for Args {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = Args;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of event arguments")
            }

            fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<Args, S::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element()? {
                    args.push(arg);
                }
                Ok(Args(args))
            }
        }
        // The length is a hint the JSON deserializer ignores.
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ack_shapes_match_the_documented_contract() {
        let ok = serde_json::to_value(Ack::Ok(Count { total: 3 })).unwrap();
        assert_eq!(ok, json!({"total": 3}));
        let err = serde_json::to_value(Ack::<Count>::error("bad_request", "nope")).unwrap();
        assert_eq!(
            err,
            json!({"error": {"code": "bad_request", "message": "nope"}})
        );
    }
}
