//! `idle`: open N connections at a bounded rate, hold them, and measure what
//! an idle audience costs the server.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::report::{Latency, histogram, record, summarize};
use crate::{BenchError, Target, connect_all, rss_kib};

#[derive(Debug, Serialize)]
pub struct IdleReport {
    pub mode: &'static str,
    pub connections: usize,
    /// Connections completed per second (upgrade + namespace join).
    pub connect_rate_per_s: f64,
    /// WebSocket upgrade to namespace `40`, per connection.
    pub handshake: Latency,
    pub server_rss_kib_before: Option<u64>,
    pub server_rss_kib_after: Option<u64>,
    /// (after − before) / connections; `None` without a server pid.
    pub rss_per_connection_bytes: Option<u64>,
}

/// Opens and holds `n` connections for `hold`, then reads the server's RSS
/// (from `/proc`, given its pid) and closes them.
pub async fn idle(
    target: &Target,
    n: usize,
    hold: Duration,
    server_pid: Option<u32>,
) -> Result<IdleReport, BenchError> {
    let before = server_pid.and_then(rss_kib);
    let started = Instant::now();
    let (clients, handshakes) = connect_all(target, n, "connecting").await?;
    let elapsed = started.elapsed().as_secs_f64();

    // Held connections must keep answering pings, so each gets a reader; a
    // connection the server closes is reported, not silently re-counted.
    let stop = CancellationToken::new();
    let mut held = JoinSet::new();
    for mut client in clients {
        let stop = stop.clone();
        held.spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => break,
                    frame = client.recv() => if frame.is_err() { return false },
                }
            }
            client.close().await;
            true
        });
    }
    let bar = target.progress.bar(hold.as_secs().max(1), "holding");
    let until = tokio::time::Instant::now() + hold;
    while tokio::time::Instant::now() < until {
        tokio::time::sleep_until(until.min(tokio::time::Instant::now() + Duration::from_secs(1)))
            .await;
        bar.inc(1);
    }
    bar.finish_and_clear();
    // Measured while every connection is still open.
    let after = server_pid.and_then(rss_kib);
    stop.cancel();
    let mut alive = 0;
    while let Some(ok) = held.join_next().await {
        alive += usize::from(ok?);
    }
    if alive < n {
        return Err(BenchError::Dropped {
            dropped: n - alive,
            of: n,
        });
    }

    let mut h = histogram();
    for micros in handshakes {
        record(&mut h, micros);
    }
    Ok(IdleReport {
        mode: "idle",
        connections: n,
        connect_rate_per_s: n as f64 / elapsed.max(1e-9),
        handshake: summarize(&h),
        server_rss_kib_before: before,
        server_rss_kib_after: after,
        rss_per_connection_bytes: before
            .zip(after)
            .map(|(b, a)| a.saturating_sub(b) * 1024 / n.max(1) as u64),
    })
}
