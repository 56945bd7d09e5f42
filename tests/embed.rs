//! tally mounted inside a host axum application through the library API: the
//! pieces under a prefix, the host's identity provider at the handshake, and
//! the ordered shutdown driven by the host.

mod common;

use std::net::SocketAddr;

use axum::Router;
use axum::routing::get;
use common::{TempDb, TestClient, TransportType, WAIT, stored, stored_total};
use serde_json::json;
use tally::counter::CounterKey;
use tally::identity::{HandshakeRequest, Refusal};
use tally::user::Username;
use tally::{Running, Tally};
use tokio::net::TcpListener;

/// Identifies sockets by an `x-user` header, as a gateway in front of the
/// host might; refuses sockets without it.
async fn by_header(request: HandshakeRequest) -> Result<Option<Username>, Refusal> {
    let name = request
        .headers
        .get("x-user")
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| Refusal::new("sign in to the host first"))?;
    Username::parse(name)
        .map(Some)
        .map_err(|_| Refusal::new("the host's user name does not fit tally"))
}

/// Serves `app` on port 0 until the test ends.
async fn serve(app: Router) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn get_status(url: String) -> (u16, String) {
    let response = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&url)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().to_string());
    let body = response.text().await.unwrap();
    (status, location.unwrap_or(body))
}

#[tokio::test]
async fn pieces_nested_under_a_prefix_with_the_hosts_identity() {
    let db = TempDb::new();
    let tally = Tally::builder(db.config())
        .identity(by_header)
        .build()
        .await
        .unwrap();
    let pieces = tally
        .page()
        .merge(tally.api())
        .merge(tally.health())
        .merge(tally.socket_io());
    // `nest_service`, not `nest`: axum's `nest` gives a nested `/` route the
    // prefix alone (`/t`), and the page lives at `/t/`.
    let app = Router::new()
        .route("/", get(|| async { "host home" }))
        .nest_service("/t", pieces);
    let running = tally.start();
    let addr = serve(app).await;
    let base = format!("http://{addr}");

    assert_eq!(
        get_status(format!("{base}/")).await,
        (200, "host home".into())
    );
    assert_eq!(get_status(format!("{base}/t/healthz")).await.0, 200);
    assert_eq!(
        get_status(format!("{base}/t/api/leaderboard")).await,
        (200, "[]".into())
    );
    let (status, page) = get_status(format!("{base}/t/")).await;
    assert_eq!(status, 200);
    assert!(page.contains(r#"src="app.js""#), "{page}");
    assert_eq!(
        get_status(format!("{base}/t")).await,
        (308, "/t/".into()),
        "the page's relative links need the trailing slash"
    );

    let socket_url = format!("{base}/t/socket.io/");
    let refused = TestClient::connect_with_headers(&socket_url, TransportType::Websocket, &[])
        .await
        .err()
        .expect("no header, no entry");
    assert!(refused.contains("sign in to the host first"), "{refused}");
    let refused = TestClient::connect_with_headers(
        &socket_url,
        TransportType::Polling,
        &[("x-user", "not a name")],
    )
    .await
    .err()
    .expect("a name tally cannot use is refused");
    assert!(refused.contains("does not fit tally"), "{refused}");

    for (i, transport) in [TransportType::Websocket, TransportType::Polling]
        .into_iter()
        .enumerate()
    {
        let mut ada =
            TestClient::connect_with_headers(&socket_url, transport, &[("x-user", "Ada")])
                .await
                .expect("the header identifies the socket");
        assert_eq!(
            ada.wait_for_event("me", |_| true).await,
            json!({"username": "Ada", "count": i})
        );
        assert_eq!(ada.click().await, json!({"total": i + 1, "you": i + 1}));
        // Tokens play no part: `refresh` has no session to extend.
        let refreshed = ada
            .emit_with_ack(
                "refresh",
                rust_socketio::Payload::Text(vec![json!({"token": "x"})]),
            )
            .await;
        assert_eq!(refreshed["error"]["code"], "no_session", "{refreshed}");
        ada.disconnect().await;
    }

    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .expect("shutdown completes")
        .unwrap();
    assert_eq!(
        stored(&db).await,
        [
            (CounterKey::Global, 2),
            (CounterKey::User(Username::parse("Ada").unwrap()), 2)
        ]
    );
}

#[tokio::test]
async fn the_hosts_shutdown_writes_every_click() {
    let db = TempDb::new();
    let mut config = db.config();
    // Long enough that only the final flush can have written the clicks.
    config.database.flush_interval = std::time::Duration::from_secs(3600);
    let tally = Tally::builder(config).build().await.unwrap();
    let app = Router::new().nest_service("/tally", tally.router());
    let running: Running = tally.start();
    let addr = serve(app).await;

    let client = TestClient::connect(
        &format!("http://{addr}/tally/socket.io/"),
        TransportType::Websocket,
    )
    .await;
    for _ in 0..5 {
        client.click_total().await;
    }
    assert_eq!(running.connections(), 1);
    assert_eq!(
        stored_total(&db).await,
        0,
        "nothing written before shutdown"
    );

    tokio::time::timeout(WAIT, running.shutdown())
        .await
        .expect("shutdown completes")
        .unwrap();
    assert_eq!(stored_total(&db).await, 5);
    client.disconnect().await;
}
