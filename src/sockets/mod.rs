//! What tally keeps about each connected socket, and the rules shared by
//! everything that looks at sockets: the connection record with its caps
//! and client-address rule ([`connection`], [`caps`]), who the socket is
//! ([`identity`]), the conversations it is in ([`memberships`]), and one
//! [`Snapshot`] of all of it for the monitoring API and the Admin UI.
//!
//! The handlers that fill these records (`crate::realtime`) sit above this
//! module, and so do their readers (`crate::http`, `crate::admin`): none of
//! them has to import another's handler file to reach a type.

pub mod caps;
pub mod connection;
pub mod identity;
pub mod memberships;
pub mod places;

use std::net::SocketAddr;
use std::sync::Arc;

use socketioxide::TransportType;

pub use caps::{Capped, Caps};
pub use connection::{Connection, Connections, Tracked};
pub use identity::{Identity, TokenSession, USER_ROOM_PREFIX, user_room};
pub use memberships::{MAX_CONVERSATIONS_PER_SOCKET, Memberships};
pub use places::{Place, Places};

use crate::bus::SocketRef;
use crate::conversation::ConversationId;
use crate::user::Username;

/// The peer address of the socket's opening request, when the HTTP server
/// recorded one (`tally serve` does; a host does with axum's
/// `into_make_service_with_connect_info::<SocketAddr>`).
pub fn peer_addr(socket: &SocketRef) -> Option<SocketAddr> {
    socket
        .req_parts()
        .extensions
        .get::<axum::extract::ConnectInfo<SocketAddr>>()
        .map(|info| info.0)
}

/// A transport's name, as the monitoring API, the Admin UI and the metrics
/// spell it.
pub fn transport_name(transport: TransportType) -> &'static str {
    match transport {
        TransportType::Websocket => "websocket",
        TransportType::Polling => "polling",
    }
}

/// One socket as its records stand now.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub id: String,
    pub user: Option<Username>,
    /// The conversations it is in, in order.
    pub conversations: Vec<ConversationId>,
    pub transport: &'static str,
    /// `None` once the socket has disconnected.
    pub connection: Option<Arc<Connection>>,
}

impl Snapshot {
    pub fn of(socket: &SocketRef) -> Self {
        Snapshot {
            id: socket.id.to_string(),
            user: socket.extensions.get::<Identity>().and_then(|i| i.user),
            conversations: socket
                .extensions
                .get::<Arc<Memberships>>()
                .map(|memberships| memberships.list())
                .unwrap_or_default(),
            transport: transport_name(socket.transport_type()),
            connection: socket
                .extensions
                .get::<Arc<Connection>>()
                .filter(|connection| connection.is_open()),
        }
    }
}
