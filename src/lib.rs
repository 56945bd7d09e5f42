//! tally: a real-time click tracker and Socket.IO server, as a library.
//!
//! Standalone, the `tally` binary parses [`config::Cli`], installs logging
//! and runs [`App`]. An axum application can mount the same server beside
//! its own routes instead: build a [`Tally`] from a [`Config`] (optionally
//! with the host's own [`identity::IdentityProvider`]), mount
//! [`Tally::router`] (or its pieces) under any prefix, [`Tally::start`] the
//! background tasks, and call [`Running::shutdown`] from the host's own
//! shutdown. `examples/embed.rs` is a complete host.

pub mod admin;
pub mod app;
pub mod auth;
pub mod config;
pub mod conversation;
pub mod counter;
pub mod health;
pub mod http;
pub mod identity;
pub mod metrics;
pub mod realtime;
pub mod serve;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod user;

pub use app::{RunError, Running, StartError, Tally, TallyBuilder};
pub use config::Config;
pub use serve::{App, serve, shutdown_signal};
