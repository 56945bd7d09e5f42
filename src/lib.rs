//! tally: a real-time click tracker and Socket.IO server, as a library.
//!
//! Standalone, the `tally` binary parses [`config::Cli`], installs logging
//! and runs [`App`]. An axum application can mount the same server beside
//! its own routes instead: build a [`Tally`] from a [`Config`] (optionally
//! with the host's own [`identity::IdentityProvider`]), mount
//! [`Tally::router`] (or its pieces) under any prefix, [`Tally::start`] the
//! background tasks, and call [`Running::shutdown`] from the host's own
//! shutdown. `examples/embed.rs` is a complete host.
//!
//! The modules form layers, each importing only the ones below it
//! (ARCHITECTURE.md draws them; `tests/layers.rs` checks them): the leaves
//! (`sync`, `clock`, `refusal`, `config`, `server`, `node`), the basics
//! (`user`, `telemetry`, `bus`: the Redis connection and the Socket.IO
//! types over it), the domain (`conversation`, `identity`, `auth`,
//! `counter`), the contract (`events`, `metrics`, `limits`), persistence
//! (`store`, `webhook`, `persist`), the socket records (`sockets`), the
//! cluster (`cluster`), `admin`,
//! [`state::AppState`], the handlers (`realtime`, `http`), and assembly
//! (`app`, `serve`, `standalone`).

pub mod admin;
pub mod app;
pub mod auth;
pub mod bus;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod conversation;
pub mod counter;
pub mod events;
pub mod http;
pub mod idempotency;
pub mod identity;
pub mod limits;
pub mod metrics;
pub mod node;
pub mod persist;
pub mod realtime;
pub mod refusal;
pub mod schema;
pub mod serve;
pub mod server;
pub mod sockets;
pub mod standalone;
pub mod state;
pub mod store;
pub mod sync;
pub mod telemetry;
pub mod user;
pub mod webhook;

pub use app::{RunError, Running, StartError, Tally, TallyBuilder};
pub use config::Config;
pub use serve::{serve, shutdown_signal};
pub use standalone::App;
