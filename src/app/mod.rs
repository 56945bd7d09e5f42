//! Assembling tally from its parts: one way for `tally serve` and for a host
//! application that mounts tally beside its own routes.
//!
//! [`Tally::builder`] (`builder.rs`) does everything that can fail at start
//! (open and migrate the store, load the counts) and returns a [`Tally`]
//! (`routes.rs`): the Socket.IO routes, the API, the page and the health
//! checks as axum routers a host mounts where it likes. [`Tally::start`]
//! (`tasks.rs`) then spawns the background tasks and returns [`Running`]
//! (`running.rs`), whose [`Running::shutdown`] stops in the order that loses
//! nothing. The once-a-second jobs are `housekeeping.rs`'s.
//!
//! This is the only module that knows every other: it registers the
//! handlers of both namespaces and hands each part the handles it needs.
//! The standalone server ([`crate::standalone::App`]) is this plus a
//! listener.

mod builder;
mod housekeeping;
mod routes;
mod running;
mod tasks;

use std::time::Duration;

pub use builder::TallyBuilder;
pub use routes::Tally;
pub use running::Running;

use crate::config::ConfigError;
use crate::persist::flush::FinalFlushError;
use crate::store::StoreError;

/// How long clients are asked to wait before reconnecting after
/// `server_shutdown` (they add up to as much again at random, so a restart
/// does not bring every client back in the same instant).
pub const RECONNECT_AFTER: Duration = Duration::from_secs(1);

pub use crate::http::REQUEST_TIMEOUT;

/// Why tally could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("could not open the store: {0}")]
    Store(#[from] StoreError),
    #[error("could not reach Redis: {0}")]
    Redis(#[from] crate::bus::BusError),
    #[error("could not join the cluster: {0}")]
    Cluster(String),
    #[error("could not listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
}

impl StartError {
    /// A namespace that could not subscribe to its Redis channels.
    fn cluster(err: impl std::fmt::Display) -> Self {
        StartError::Cluster(err.to_string())
    }
}

/// Why tally stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("the HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
    #[error(transparent)]
    FinalFlush(#[from] FinalFlushError),
    #[error("a background task panicked: {0}")]
    Task(#[from] tokio::task::JoinError),
}
