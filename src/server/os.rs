//! What the server asks of the operating system: a deep listen backlog,
//! and as many open files as the hard limit allows.

use std::net::SocketAddr;

use tokio::net::TcpListener;

/// The listen backlog asked for; the kernel caps it at
/// `net.core.somaxconn` (4,096 by default since Linux 5.4). tokio's
/// `TcpListener::bind` asks for 1,024. When thousands of clients connect at
/// once (a deploy, a network blip) a full queue makes the kernel drop their
/// SYNs, and a client, or a load balancer's health check, retries only
/// after a second.
const LISTEN_BACKLOG: u32 = 65_535;

/// Binds and listens on `addr` with `LISTEN_BACKLOG`.
pub fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    // As `TcpListener::bind` does: a restarted server binds its port even
    // while the last one's connections linger in TIME_WAIT.
    #[cfg(unix)]
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Descriptors that are not connections: the database pool, the listeners,
/// logs, the runtime's own.
const FD_RESERVE: u64 = 100;

/// Raises this process's soft limit on open files to its hard limit (each
/// connection is one), logs how many connections that leaves room for, and
/// warns when it is fewer than `--max-connections` allows (or, with no cap,
/// fewer than 65,536): the operator then has to raise the hard limit
/// (`ulimit -Hn`, systemd's `LimitNOFILE=`), which a process cannot.
pub fn raise_fd_limit(max_connections: usize) {
    let limit = match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) => limit,
        Err(err) => {
            tracing::warn!(error = %err, "cannot raise the open-file limit");
            return;
        }
    };
    let room = limit.saturating_sub(FD_RESERVE);
    let wanted = match max_connections {
        0 => 65_536,
        cap => cap as u64,
    };
    if room < wanted {
        tracing::warn!(
            open_files = limit,
            "the open-file limit of {limit} leaves room for about {room} connections; \
             raise the hard limit (ulimit -Hn, LimitNOFILE=) to hold more"
        );
    } else {
        tracing::info!(open_files = limit, "room for about {room} connections");
    }
}
