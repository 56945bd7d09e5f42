//! The HTTP server and the operating system around it: the HTTP/1.1
//! accept loop with its header timeout (`http1.rs`), the listen backlog and
//! the open-file limit (`os.rs`), the stop signals (`signal.rs`), the
//! bound on writes nobody reads ([`send`]), and the byte counts the Admin UI
//! charts ([`bytes`]).
//!
//! Nothing here knows tally: it serves any axum [`Router`](axum::Router),
//! so it sits at the bottom of the layers, below everything it serves.

pub mod bytes;
mod http1;
mod os;
pub mod send;
mod signal;

pub use http1::{HttpOptions, nodelay, serve_http};
pub use os::{listen, raise_fd_limit};
pub use signal::shutdown_signal;
