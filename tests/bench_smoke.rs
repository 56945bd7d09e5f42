//! The load tool against the real server, tiny and short: checks that every
//! mode runs and counts right. Timing is reported by the tool, never asserted:
//! CI machines are too noisy for that, and the numbers live in
//! docs/benchmarks.md.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::{ChildServer, TempDb, TestServer};
use tally_bench::{self as bench, CapacitySettings, Target};

/// The global total stored in the SQLite file at `db`.
async fn stored_total(db: &std::path::Path) -> u64 {
    let store = tally::store::connect(&format!("sqlite://{}", db.display()), &Default::default())
        .await
        .unwrap();
    store
        .load()
        .await
        .unwrap()
        .into_iter()
        .filter(|(key, _)| *key == tally::counter::CounterKey::Global)
        .map(|(_, total)| total)
        .sum()
}

#[tokio::test]
async fn every_mode_runs_and_counts_exactly() {
    // The real binary in its own process, so the tool measures the server's
    // memory and nothing of this test's.
    let mut server = ChildServer::start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            "sqlite://t.db",
            "--flush-interval",
            "50ms",
        ],
        &[],
    );
    let target = Target::new(server.url.clone());

    let idle = bench::idle(&target, 20, Duration::from_millis(200), Some(server.pid()))
        .await
        .unwrap();
    assert_eq!(idle.handshake.samples, 20, "every handshake was timed");
    let (before, after) = (
        idle.server_rss_kib_before
            .expect("the server's RSS was read"),
        idle.server_rss_kib_after
            .expect("the server's RSS was read"),
    );
    assert!(after >= before, "{idle:?}");
    // Per connection a server spends kilobytes, not the megabytes a reading
    // of the wrong process (this test, with its clients) would show.
    let per_connection = idle.rss_per_connection_bytes.unwrap();
    assert!(per_connection < 256 * 1024, "{idle:?}");

    let stalled = bench::Stalled {
        clients: 3,
        recv_buffer: 2048,
        server_pid: Some(server.pid()),
    };
    let fanout = bench::fanout_with(&target, 10, 50.0, Duration::from_millis(400), stalled)
        .await
        .unwrap();
    assert_eq!(fanout.stalled_recovered, 3, "{fanout:?}");
    assert!(fanout.server_rss_kib.is_some());
    // The recovery's one extra click counts with the fanout's.
    let fanout_clicks = fanout.clicks + 1;
    assert!(fanout.clicks > 0, "{fanout:?}");
    assert_eq!(fanout.listeners_missing_final_total, 0, "{fanout:?}");
    assert_eq!(fanout.missed_updates, 0, "{fanout:?}");
    assert_eq!(
        fanout.delivery.samples,
        10 * fanout.clicks,
        "every listener saw every click: {fanout:?}"
    );

    let soak = bench::soak(
        &target,
        10,
        20.0,
        Duration::from_millis(600),
        Duration::from_millis(200),
        Some(server.pid()),
    )
    .await
    .unwrap();
    assert!(soak.clicks > 0, "{soak:?}");
    assert_eq!(soak.listeners_missing_final_total, 0, "{soak:?}");
    assert!(soak.rss_samples.len() >= 3, "{soak:?}");
    assert!(soak.rss_drift_kib.is_some());

    let chat = bench::chat(&target, 10, 40.0, Duration::from_millis(500), "smoke")
        .await
        .unwrap();
    assert!(chat.messages > 0, "{chat:?}");
    assert_eq!(chat.acked, chat.messages, "{chat:?}");
    assert_eq!(chat.refused, 0, "{chat:?}");
    assert_eq!(chat.lost, 0, "{chat:?}");
    assert_eq!(
        chat.delivery.samples,
        10 * chat.messages,
        "every member got every message: {chat:?}"
    );

    let flood = bench::flood(&target, 10, 200.0, Duration::from_millis(500))
        .await
        .unwrap();
    assert!(flood.converged, "{flood:?}");
    assert_eq!(flood.unacked, 0, "{flood:?}");
    assert_eq!(
        flood.final_total,
        fanout_clicks + soak.clicks + flood.clicks,
        "fanout's, the soak's, then the flood's clicks: the tool's totals are the server's"
    );
    assert_eq!(flood.ack.samples, flood.clicks);
    assert_eq!(
        flood.visible.samples, flood.clicks,
        "the observer saw every click"
    );
    assert!(
        flood.messages_received >= flood.clicks,
        "at least one ack per click: {flood:?}"
    );

    let settings = CapacitySettings {
        clients: 5,
        rates: vec![50.0, 80.0],
        runs: 3,
        duration: Duration::from_millis(300),
        // Generous: this checks the ladder's mechanics, not the machine.
        bound: Duration::from_secs(5),
        stop_after: 2,
    };
    let ladder = bench::capacity(&target, &settings).await.unwrap();
    assert_eq!(ladder.rates.len(), 2, "{ladder:?}");
    for rung in &ladder.rates {
        assert_eq!(rung.runs.len(), 3, "three runs at each rate: {rung:?}");
        assert!(rung.runs.iter().all(|r| r.converged), "{rung:?}");
        assert!(rung.passed, "{rung:?}");
    }
    assert_eq!(ladder.capacity_per_s, 80.0, "{ladder:?}");
    assert_eq!(ladder.limited_by, "max rate");
    let ladder_clicks = ladder.warmup.clicks
        + ladder
            .rates
            .iter()
            .flat_map(|rung| &rung.runs)
            .map(|r| r.clicks)
            .sum::<u64>();

    let scale = bench::scale(
        &target,
        &bench::ScaleSettings {
            steps: vec![10, 25],
            traffic: bench::StepTraffic {
                clicks: 2,
                click_every: Duration::from_millis(50),
                flood_clients: 4,
                flood_rate: 100.0,
                flood_duration: Duration::from_millis(300),
                health_every: Duration::from_millis(50),
            },
            server_pid: Some(server.pid()),
        },
    )
    .await
    .unwrap();
    assert_eq!(scale.stopped, None, "{scale:?}");
    let held: Vec<_> = scale.steps.iter().map(|s| s.connections).collect();
    assert_eq!(held, [10, 25], "each step adds to the connections held");
    assert_eq!(
        scale.steps[1].handshake.samples, 15,
        "the second step opened only the new ones"
    );
    for step in &scale.steps {
        let listeners = (step.connections - 4) as u64;
        assert_eq!(
            (step.click_missed, step.click_short),
            (0, 0),
            "every click reached every connection: {step:?}"
        );
        assert_eq!(step.click_to_all.samples, 2 * step.connections as u64);
        assert!(step.flood.converged, "{step:?}");
        assert_eq!(step.flood.missed, 0, "{step:?}");
        assert_eq!(
            step.flood.visible_to_all.samples,
            step.flood.clicks * listeners,
            "one sample per click and listener: {step:?}"
        );
        assert_eq!(step.flood.ack.samples, step.flood.clicks);
        assert!(
            step.health.all.samples > 0 && step.health.failures == 0,
            "/healthz answered throughout: {step:?}"
        );
        assert_eq!(
            step.health.all.samples,
            step.health.connecting.samples
                + step.health.clicking.samples
                + step.health.flooding.samples,
            "each probe counts for one phase: {step:?}"
        );
        assert!(step.server_rss_kib.is_some(), "{step:?}");
        assert!(step.server_rss_after_traffic_kib.is_some(), "{step:?}");
    }
    let scale_clicks: u64 = scale.steps.iter().map(|s| 2 + s.flood.clicks).sum();

    let db = server.dir.path().join("t.db");
    assert!(server.terminate().success());
    let stored = stored_total(&db).await;
    assert_eq!(
        stored,
        fanout_clicks + soak.clicks + flood.clicks + ladder_clicks + scale_clicks,
        "the server stored exactly the clicks the tool counted"
    );
}

#[tokio::test]
async fn a_broadcast_in_steps_reaches_every_connection() {
    // More sockets than one broadcast writes to at once: the totals go out
    // in steps that take turns with other work, and must still reach all.
    let connections = tally::realtime::fanout::AT_ONCE + 76;
    bench::raise_fd_limit(connections).expect("room for the connections");
    let mut server = ChildServer::start(
        &["--addr", "127.0.0.1:0", "--database-url", "sqlite://t.db"],
        &[],
    );
    let target = Target::new(server.url.clone());
    let scale = bench::scale(
        &target,
        &bench::ScaleSettings {
            steps: vec![connections],
            traffic: bench::StepTraffic {
                clicks: 3,
                click_every: Duration::from_millis(50),
                flood_clients: 4,
                flood_rate: 100.0,
                flood_duration: Duration::from_millis(300),
                health_every: Duration::from_millis(50),
            },
            server_pid: None,
        },
    )
    .await
    .unwrap();
    assert_eq!(scale.stopped, None, "{scale:?}");
    let step = &scale.steps[0];
    assert_eq!(
        (step.click_missed, step.click_short),
        (0, 0),
        "every click reached every connection: {step:?}"
    );
    assert_eq!(step.click_to_all.samples, 3 * connections as u64);
    assert!(step.flood.converged && step.flood.missed == 0, "{step:?}");
    assert!(server.terminate().success());
}

#[tokio::test]
async fn an_attack_beside_the_load_is_limited_and_refused() {
    // The server's own limits this time: a click bucket per socket and a
    // small per-address cap, so the attack's crowd meets it.
    let mut server = ChildServer::start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            "sqlite://t.db",
            "--click-limit",
            "20:40",
            "--max-connections-per-ip",
            "5",
        ],
        &[],
    );
    let mut target = Target::new(server.url.clone());
    // Four bystanders on each of two addresses, under the cap.
    target.sources = bench::loopback_sources(2);
    let attack = bench::Attack {
        rate: 2_000.0,
        script_from: [127, 0, 0, 1].into(),
        sockets: 10,
        sockets_from: [127, 1, 0, 1].into(),
    };
    let flood = bench::flood_with(&target, 8, 40.0, Duration::from_secs(1), Some(attack))
        .await
        .unwrap();
    assert!(flood.converged, "{flood:?}");
    assert_eq!(flood.unacked, 0, "the bystanders were all answered");
    let attack = flood.attack.expect("an attack report");
    assert_eq!(
        (attack.sockets_accepted, attack.sockets_refused),
        (5, 5),
        "{attack:?}"
    );
    assert!(attack.script_connections >= 1, "{attack:?}");
    assert!(attack.script_refused_clicks > 0, "{attack:?}");
    // Each of its connections may spend a burst of 40 and then 20 a second
    // for the (at most 1 s and a little) it lasts: nowhere near what it sent.
    assert!(
        attack.script_counted <= attack.script_connections * 70,
        "{attack:?}"
    );
    // The server's own count, once stored: the bystanders' acknowledged
    // clicks, the script's acknowledged ones, and at most those of its
    // clicks that were cut off unanswered.
    let db = server.dir.path().join("t.db");
    assert!(server.terminate().success());
    let stored = stored_total(&db).await;
    let acknowledged = flood.clicks + attack.script_counted;
    assert!(
        (acknowledged..=acknowledged + attack.script_unanswered).contains(&stored),
        "stored {stored}, acknowledged {acknowledged}: {attack:?}"
    );
}

#[tokio::test]
async fn a_missing_server_is_a_clear_error() {
    // A port nobody listens on: bind one, note it, close it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = Target::new(format!("http://127.0.0.1:{port}"));
    let err = bench::idle(&target, 1, Duration::ZERO, None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn an_http_server_that_is_not_socket_io_is_a_clear_error() {
    // A bare HTTP server answering every request with 200 and a page.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { break };
            // The request itself does not matter: read what came and answer.
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            stream
                .write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello",
                )
                .ok();
        }
    });
    let err = bench::idle(
        &Target::new(format!("http://{addr}")),
        1,
        Duration::ZERO,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("is not a Socket.IO server"),
        "{err}"
    );

    // tally itself, but at a path with no Socket.IO under it.
    let db = TempDb::new();
    let server = TestServer::start(db.config()).await;
    let err = bench::idle(
        &Target::new(format!("{}/nope", server.url())),
        1,
        Duration::ZERO,
        None,
    )
    .await
    .unwrap_err();
    assert!(
        err.to_string().contains("is not a Socket.IO server"),
        "{err}"
    );
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_crowd_split_over_shards_acts_as_one_load() {
    let mut server = ChildServer::start(
        &[
            "--addr",
            "127.0.0.1:0",
            "--database-url",
            "sqlite://t.db",
            "--flush-interval",
            "50ms",
        ],
        &[],
    );
    let mut target = Target::new(server.url.clone());
    target.server_pids = vec![server.pid()];
    target.sources = bench::loopback_sources(2);
    let settings = bench::CrowdSettings {
        processes: 3,
        steps: vec![13, 31],
        traffic: bench::StepTraffic {
            clicks: 2,
            click_every: Duration::from_millis(50),
            flood_clients: 7,
            flood_rate: 140.0,
            flood_duration: Duration::from_millis(400),
            health_every: Duration::from_millis(50),
        },
    };
    // The shards as tasks: the same orders and answers as processes.
    let crowd = bench::crowd(&target, &settings, &bench::Shards::Tasks)
        .await
        .unwrap();
    assert_eq!(crowd.stopped, None, "{crowd:?}");
    let held: Vec<_> = crowd.steps.iter().map(|s| s.connections).collect();
    assert_eq!(held, [13, 31], "the shards' shares add up to each step");
    let mut clicks = 0;
    for step in &crowd.steps {
        assert_eq!(step.most_per_process, step.connections.div_ceil(3));
        assert_eq!(
            (step.click_missed, step.click_short, step.closed),
            (0, 0, 0),
            "every click reached every connection of every shard, none cut off: {step:?}"
        );
        assert_eq!(step.click_to_all.samples, 2 * step.connections as u64);
        let flood = &step.flood;
        assert!(flood.converged && flood.missed == 0, "{step:?}");
        assert!(flood.clicks > 0, "{step:?}");
        assert_eq!(flood.ack.samples, flood.clicks, "{step:?}");
        assert_eq!(
            flood.visible_to_all.samples,
            flood.clicks * (step.connections - 7) as u64,
            "each shard timed every shard's clicks on its listeners: {step:?}"
        );
        assert_eq!(step.health.len(), 1);
        assert!(step.health[0].failures == 0 && step.health[0].all.samples > 0);
        assert!(step.servers_rss_kib.is_some() && step.servers_rss_after_traffic_kib.is_some());
        clicks += 2 + flood.clicks;
    }
    let db = server.dir.path().join("t.db");
    assert!(server.terminate().success());
    assert_eq!(
        stored_total(&db).await,
        clicks,
        "the server stored exactly the clicks the shards counted"
    );
}
