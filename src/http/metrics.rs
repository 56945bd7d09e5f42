//! `/metrics`: the figures read at scrape time (sockets by transport,
//! pending clicks, occupied conversations), then every metric rendered in
//! the Prometheus text format.

use socketioxide::TransportType;

use crate::bus::SocketIo;
use crate::metrics::State;
use crate::state::AppState;

/// The body of `/metrics`.
pub fn render(state: &AppState, io: &SocketIo) -> String {
    let mut now = State {
        pending: state.counters.pending_clicks(),
        occupied: state.counters.occupied_rooms(),
        cluster: state.cluster.as_ref().map(|cluster| cluster.state()),
        ..Default::default()
    };
    if let Some(everyone) = io.of("/") {
        for socket in everyone.sockets() {
            match socket.transport_type() {
                TransportType::Websocket => now.websocket += 1,
                TransportType::Polling => now.polling += 1,
            }
        }
    }
    state.metrics.set_state(&now);
    state.metrics.render()
}
