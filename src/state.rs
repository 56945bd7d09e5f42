//! The shared application state handed to every handler.

use std::sync::Arc;
use std::time::Duration;

use crate::counter::Counters;
use crate::store::Store;

/// Cheap to clone: every field is a handle or a copyable value.
#[derive(Clone)]
pub struct AppState {
    pub counters: Arc<Counters>,
    pub store: Arc<dyn Store>,
    /// Zero means "broadcast after every click" instead of coalescing.
    pub broadcast_interval: Duration,
}
