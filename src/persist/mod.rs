//! The background work that moves state into the store and watches it:
//! the write-behind of counts ([`flush`]), the message log's group-commit
//! writer ([`message_log`]), the pruning of old messages ([`retention`]) and
//! the store's health check ([`health`]).
//!
//! These sit above both the store and the in-memory state they write, so
//! neither [`crate::counter`] nor [`crate::conversation`] knows the store
//! exists, and the store knows only their value types.

pub mod flush;
pub mod health;
pub mod message_log;
pub mod retention;
