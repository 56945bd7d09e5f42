//! tally: a real-time click tracker server speaking Socket.IO.
//!
//! The binary in `main.rs` only parses [`config::Cli`], installs logging and
//! runs [`app::App`]; everything else lives in this library so tests and
//! embedders can start the real server on port 0.

pub mod app;
pub mod auth;
pub mod bench;
pub mod config;
pub mod counter;
pub mod http;
pub mod realtime;
pub mod state;
pub mod store;
pub mod telemetry;
pub mod user;

pub use app::App;
pub use config::Config;
