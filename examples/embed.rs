//! A host application that embeds tally.
//!
//! The host is a small axum app with its own pages, its own sign-in (a
//! session cookie) and its own middleware. It mounts all of tally under
//! `/tally` — the page at `/tally/`, the API at `/tally/api/…`,
//! `/tally/healthz` and Socket.IO at `/tally/socket.io/` — and tells tally who
//! each Socket.IO connection belongs to from that same cookie, so a visitor
//! who signed in to the host clicks under their name without a tally token.
//!
//! tally's settings come from the same `TALLY_*` environment variables as
//! `tally serve` (`TALLY_ADDR`, `TALLY_DATABASE_URL`, …). Run it with
//!
//! ```sh
//! cargo run --release --example embed
//! ```
//!
//! and open <http://127.0.0.1:3000/>. Ctrl-C stops it without losing a click.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::extract::{Form, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tally::identity::HandshakeRequest;
use tally::user::Username;
use tally::{Config, Tally};
use tokio::net::TcpListener;
use tower_http::trace::TraceLayer;

/// The host's session cookie.
const SESSION_COOKIE: &str = "host_session";

/// The host's sign-in: session id → user. A real application keeps these in
/// its own store; tally only ever asks "who is this cookie?".
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<String, Username>>>);

impl Sessions {
    fn user(&self, id: &str) -> Option<Username> {
        self.0.lock().unwrap().get(id).cloned()
    }

    fn open(&self, user: Username) -> anyhow::Result<String> {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes)
            .map_err(|err| anyhow::anyhow!("no randomness for a session id: {err}"))?;
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        self.0.lock().unwrap().insert(id.clone(), user);
        Ok(id)
    }

    fn close(&self, id: &str) {
        self.0.lock().unwrap().remove(id);
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    tally::telemetry::init(config.log.as_deref(), config.log_format)?;
    let addr = config.addr;

    let sessions = Sessions::default();
    let tally = Tally::builder(config)
        // Who is this Socket.IO connection? The host's cookie says; visitors
        // who have not signed in click anonymously.
        .identity({
            let sessions = sessions.clone();
            move |request: HandshakeRequest| {
                let user = request
                    .cookie(SESSION_COOKIE)
                    .and_then(|id| sessions.user(id));
                async move { Ok(user) }
            }
        })
        .build()
        .await?;

    let app = Router::new()
        .route("/", get(home))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .with_state(sessions)
        .nest_service("/tally", tally.router())
        // The host's middleware wraps tally's routes too.
        .layer(middleware::from_fn(served_by))
        .layer(TraceLayer::new_for_http());
    let running = tally.start();

    let listener = TcpListener::bind(addr)
        .await
        .with_context(|| format!("could not listen on {addr}"))?;
    // Logs `listening on http://…`; on Ctrl-C or SIGTERM the HTTP server
    // stops accepting and drains while tally publishes its last totals,
    // closes its sockets and writes every click.
    tally::serve::serve(listener, app, running, tally::shutdown_signal()).await?;
    Ok(())
}

/// The host's own home page: who you are, sign in or out, and a link to tally.
async fn home(State(sessions): State<Sessions>, request: Request) -> Html<String> {
    let user = session_id(&request).and_then(|id| sessions.user(&id));
    let who = match user {
        // A `Username` is letters, digits, `_ - .` only: safe to put in HTML.
        Some(user) => format!(
            r#"<p>Signed in as <strong>{user}</strong>.</p>
<form method="post" action="/logout"><button>Sign out</button></form>"#
        ),
        None => r#"<form method="post" action="/login">
<label>Name <input name="username" required></label> <button>Sign in</button></form>"#
            .to_string(),
    };
    Html(format!(
        r#"<!doctype html><meta charset="utf-8"><title>Host app</title>
<h1>The host application</h1>
{who}
<p><a href="/tally/">Open tally</a></p>"#
    ))
}

#[derive(Deserialize)]
struct Login {
    username: String,
}

/// Signs in under any valid name (a real host checks a password) and sends
/// the visitor on to tally.
async fn login(State(sessions): State<Sessions>, Form(login): Form<Login>) -> Response {
    let Ok(user) = Username::parse(login.username.trim()) else {
        return (
            axum::http::StatusCode::UNPROCESSABLE_ENTITY,
            tally::user::USERNAME_RULE,
        )
            .into_response();
    };
    let id = match sessions.open(user) {
        Ok(id) => id,
        Err(err) => {
            tracing::error!(error = %err, "sign-in failed");
            return axum::http::StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
    };
    let cookie = format!("{SESSION_COOKIE}={id}; Path=/; HttpOnly; SameSite=Lax");
    ([(header::SET_COOKIE, cookie)], Redirect::to("/tally/")).into_response()
}

async fn logout(State(sessions): State<Sessions>, request: Request) -> Response {
    if let Some(id) = session_id(&request) {
        sessions.close(&id);
    }
    let expired = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0");
    ([(header::SET_COOKIE, expired)], Redirect::to("/")).into_response()
}

fn session_id(request: &Request) -> Option<String> {
    tally::identity::cookie(request.headers(), SESSION_COOKIE).map(str::to_string)
}

/// The host's own middleware: marks every response it serves, tally's too.
async fn served_by(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response
        .headers_mut()
        .insert("x-served-by", HeaderValue::from_static("embed-example"));
    response
}
