//! Handshake authentication with JWTs: every refusal path, expiry and refresh.

mod common;

use std::time::Duration;

use common::{TempDb, TestClient, TestServer, TransportType};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tally::config::Secret;
use tally::{auth::AuthMode, clock::unix_now};

const SECRET: &str = "test-secret-test-secret-test-secret!";

fn token_mode(db: &TempDb) -> tally::Config {
    let mut config = db.config();
    config.auth.mode = AuthMode::Token;
    config.auth.jwt_secret = Some(Secret(SECRET.into()));
    config
}

fn sign_with(claims: Value, alg: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(alg),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn token(sub: &str, lifetime_secs: u64) -> String {
    sign_with(
        json!({"sub": sub, "exp": unix_now() + lifetime_secs}),
        Algorithm::HS256,
        SECRET,
    )
}

/// A WebSocket client signed in with a fresh token for `sub`.
async fn signed_in(server: &TestServer, sub: &str, lifetime_secs: u64) -> TestClient {
    TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({ "token": token(sub, lifetime_secs) }),
    )
    .await
    .unwrap_or_else(|err| panic!("{sub} signs in: {err}"))
}

async fn refused(server: &TestServer, auth: Value) -> String {
    TestClient::connect_as(&server.url(), TransportType::Websocket, auth.clone())
        .await
        .err()
        .unwrap_or_else(|| panic!("{auth} must be refused"))
}

#[tokio::test]
async fn token_mode_refuses_every_bad_handshake_with_its_reason() {
    let db = TempDb::new();
    let server = TestServer::start(token_mode(&db)).await;
    let now = unix_now();
    let unsigned = {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&format!(r#"{{"sub":"ada","exp":{}}}"#, now + 60))
        )
    };
    let cases = [
        ("missing", json!({}), "unauthorized"),
        ("username only", json!({"username": "ada"}), "unauthorized"),
        ("malformed", json!({"token": "not-a-jwt"}), "unauthorized"),
        ("not a string", json!({"token": 42}), "unauthorized"),
        (
            "wrong signature",
            json!({"token": sign_with(json!({"sub": "ada", "exp": now + 60}), Algorithm::HS256, "another-secret-another-secret-another")}),
            "unauthorized",
        ),
        (
            "wrong algorithm",
            json!({"token": sign_with(json!({"sub": "ada", "exp": now + 60}), Algorithm::HS384, SECRET)}),
            "unauthorized",
        ),
        ("alg none", json!({"token": unsigned}), "unauthorized"),
        (
            "no exp",
            json!({"token": sign_with(json!({"sub": "ada"}), Algorithm::HS256, SECRET)}),
            "unauthorized",
        ),
        (
            "expired",
            json!({"token": sign_with(json!({"sub": "ada", "exp": now - 60}), Algorithm::HS256, SECRET)}),
            "token expired",
        ),
        (
            "not yet valid",
            json!({"token": sign_with(json!({"sub": "ada", "exp": now + 600, "nbf": now + 300}), Algorithm::HS256, SECRET)}),
            "token not yet valid",
        ),
        (
            // Validly signed, so only the size limit can refuse it.
            "oversized",
            json!({"token": sign_with(json!({"sub": "ada", "exp": now + 60, "pad": "x".repeat(4_000)}), Algorithm::HS256, SECRET)}),
            "unauthorized",
        ),
        (
            // Within the old 5 s leeway: accepted once, then cut at once.
            "expired a second ago",
            json!({"token": sign_with(json!({"sub": "ada", "exp": now - 1}), Algorithm::HS256, SECRET)}),
            "token expired",
        ),
        (
            "bad sub",
            json!({"token": token("no spaces allowed", 60)}),
            "unauthorized",
        ),
    ];
    let big = sign_with(
        json!({"sub": "ada", "exp": now + 60, "pad": "x".repeat(4_000)}),
        Algorithm::HS256,
        SECRET,
    );
    assert!(
        big.len() > 4096,
        "the oversized token is {} bytes",
        big.len()
    );
    for (what, auth, reason) in cases {
        let err = refused(&server, auth).await;
        // socketioxide sends the middleware's error as `{"message": reason}`.
        assert!(
            err.contains(&format!(r#""message":"{reason}""#)),
            "{what}: expected {reason:?}, got {err}"
        );
    }

    // The refused clients could not click: the count has not moved.
    let mut ada = TestClient::connect_as(
        &server.url(),
        TransportType::Polling,
        json!({"token": token("ada", 60)}),
    )
    .await
    .expect("a valid token is accepted");
    assert_eq!(ada.first_total().await, 0);
    assert_eq!(
        ada.wait_for_event("me", |_| true).await,
        json!({"username": "ada", "count": 0})
    );
    assert_eq!(ada.click().await, json!({"total": 1, "you": 1}));
    ada.disconnect().await;

    // Guest login is off by default in token mode.
    let response = reqwest::Client::new()
        .post(format!("{}/api/session", server.url()))
        .json(&json!({"username": "eve"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    server.stop().await.unwrap();
    assert_eq!(common::stored_total(&db).await, 1);
}

#[tokio::test]
async fn claims_tally_does_not_read_do_not_refuse_a_token() {
    // Another backend's tokens often name an audience, an issuer and an id
    // for its own purposes; tally reads only `sub`, `exp`, `iat`, `nbf` and
    // `conversations`.
    let db = TempDb::new();
    let server = TestServer::start(token_mode(&db)).await;
    let claims = json!({
        "sub": "ada",
        "exp": unix_now() + 60,
        "aud": "tally",
        "iss": "https://backend.example",
        "jti": "a1",
    });
    let ada = TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({ "token": sign_with(claims, Algorithm::HS256, SECRET) }),
    )
    .await
    .expect("a token with aud, iss and jti signs in");
    let ack = ada.emit_json("click", json!({})).await;
    assert_eq!(ack["you"], 1, "{ack}");
    ada.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn open_mode_accepts_names_and_tokens_but_not_bad_tokens() {
    let db = TempDb::new();
    let mut config = db.config();
    config.auth.jwt_secret = Some(Secret(SECRET.into()));
    let server = TestServer::start(config).await;
    let err = refused(&server, json!({"token": "garbage", "username": "ada"})).await;
    assert!(
        err.contains("unauthorized"),
        "a bad token is not silently ignored: {err}"
    );
    let mut by_token = signed_in(&server, "bob", 60).await;
    assert_eq!(
        by_token.wait_for_event("me", |_| true).await["username"],
        "bob"
    );
    by_token.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn sessions_end_when_their_token_expires() {
    let db = TempDb::new();
    let server = TestServer::start(token_mode(&db)).await;
    let mut client = signed_in(&server, "ada", 2).await;
    let expired = client.wait_for_event("session_expired", |_| true).await;
    assert_eq!(expired, json!({"reason": "token expired"}));
    client
        .wait_for_event_within("close", Duration::from_secs(5), |_| true)
        .await
        .expect("the server closes the socket after session_expired");
    client.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_refreshed_session_outlives_its_first_token() {
    let db = TempDb::new();
    let server = TestServer::start(token_mode(&db)).await;
    // Three seconds on the clock leave at least two to refresh in, whatever
    // the fraction of the current second; the wait below is measured from
    // the token's own `exp`, not from a fixed sleep.
    let first_exp = unix_now() + 3;
    let mut client = TestClient::connect_as(
        &server.url(),
        TransportType::Websocket,
        json!({"token": sign_with(json!({"sub": "ada", "exp": first_exp}), Algorithm::HS256, SECRET)}),
    )
    .await
    .expect("ada signs in");

    let wrong_user = client
        .emit_with_ack("refresh", json!({"token": token("mallory", 60)}).into())
        .await;
    assert_eq!(wrong_user["error"]["code"], "wrong_user");
    let garbage = client
        .emit_with_ack("refresh", json!({"token": "garbage"}).into())
        .await;
    assert_eq!(garbage["error"]["code"], "unauthorized");

    let fresh = token("ADA", 60);
    let ack = client
        .emit_with_ack("refresh", json!({"token": fresh}).into())
        .await;
    assert!(
        ack["expires_at"].as_u64().unwrap() >= unix_now() + 50,
        "{ack}"
    );

    // Until a second past the first token's expiry, the session stays up.
    let past_first_expiry = tally::clock::time_until(first_exp) + Duration::from_secs(1);
    assert!(
        client
            .wait_for_event_within("session_expired", past_first_expiry, |_| true)
            .await
            .is_none()
    );
    assert_eq!(client.click().await, json!({"total": 1, "you": 1}));
    client.disconnect().await;
    server.stop().await.unwrap();
}

#[tokio::test]
async fn a_malformed_refresh_is_answered_with_an_error() {
    let db = TempDb::new();
    let server = TestServer::start(token_mode(&db)).await;
    let client = signed_in(&server, "ada", 60).await;
    for payload in [
        json!({}),
        json!({"token": 42}),
        json!({"token": token("ada", 60), "extra": true}),
        json!("just a string"),
        json!(null),
    ] {
        let ack = client
            .emit_with_ack("refresh", payload.clone().into())
            .await;
        assert_eq!(ack["error"]["code"], "bad_request", "{payload}: {ack}");
    }
    client.disconnect().await;
    server.stop().await.unwrap();
}
