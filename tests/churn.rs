//! Rapid connect and disconnect (the design's EC-1): 200 clients
//! connecting and leaving in a tight loop for 10 s. Afterwards no socket is
//! left counted, every connect has its disconnect, and the server still
//! serves. Its memory before and after is printed for the record (figures
//! are reported, not asserted: see docs/benchmarks.md).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{ChildServer, TestClient, TransportType, WAIT, metric};
use futures_util::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::Message;

const CLIENTS: usize = 200;
const FOR: Duration = Duration::from_secs(10);

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Connects over WebSocket, joins `/`, and leaves at once.
async fn one_cycle(ws_url: &str) -> bool {
    let Ok(Ok((mut ws, _))) =
        tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(ws_url)).await
    else {
        return false;
    };
    if ws.send(Message::text("40")).await.is_err() {
        return false;
    }
    while let Ok(Some(Ok(message))) = tokio::time::timeout(WAIT, ws.next()).await {
        if matches!(&message, Message::Text(text) if text.starts_with("40")) {
            ws.close(None).await.ok();
            return true;
        }
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_clients_churning_for_ten_seconds_leave_nothing_behind() {
    // All 200 clients come from one address: no per-address cap, so that
    // every cycle must succeed.
    let server = ChildServer::start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            "sqlite://t.db",
            "--max-connections-per-ip",
            "0",
        ],
        &[],
    );
    let url = server.url.clone();
    // Warm up, so the baseline includes what the first connections allocate.
    for _ in 0..3 {
        TestClient::connect(&url, TransportType::Websocket)
            .await
            .disconnect()
            .await;
    }
    let baseline = rss_kib(server.pid());

    let ws_url = format!(
        "{}/socket.io/?EIO=4&transport=websocket",
        url.replacen("http", "ws", 1)
    );
    // Two halves, with the memory read after each: growth in the first and
    // none in the second is the allocator keeping its peak, growth in both
    // would be a leak.
    let cycles = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut rss = Vec::new();
    for _ in 0..2 {
        let deadline = tokio::time::Instant::now() + FOR / 2;
        let tasks: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (ws_url, cycles, failures) = (ws_url.clone(), cycles.clone(), failures.clone());
                tokio::spawn(async move {
                    while tokio::time::Instant::now() < deadline {
                        let counter = if one_cycle(&ws_url).await {
                            &cycles
                        } else {
                            &failures
                        };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.unwrap();
        }
        rss.push(rss_kib(server.pid()));
    }
    let cycles = cycles.load(Ordering::Relaxed);
    let failures = failures.load(Ordering::Relaxed);
    assert_eq!(failures, 0, "{failures} cycles failed, {cycles} succeeded");
    assert!(cycles >= CLIENTS as u64, "{cycles} cycles");

    // Every socket is gone (bounded wait: closes are processed in the
    // background), and each connect has its disconnect.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let health: serde_json::Value = reqwest::get(format!("{url}/healthz"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if health["connections"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let connects = metric(&url, "tally_socket_connects_total").await;
    let disconnects = metric(&url, "tally_socket_disconnects_total").await;
    assert_eq!(connects, disconnects);
    assert!(connects >= cycles + 3);
    let after = rss_kib(server.pid());
    eprintln!(
        "churn: {cycles} connect/disconnect cycles by {CLIENTS} clients in {FOR:?}; \
         server RSS {baseline} KiB before, {} KiB after 5 s, {} KiB after 10 s, \
         {after} KiB once every socket was gone",
        rss[0], rss[1]
    );
    // Still serving.
    let client = TestClient::connect(&url, TransportType::Polling).await;
    assert_eq!(client.click_total().await, 1);
    client.disconnect().await;
}
