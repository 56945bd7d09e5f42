//! The namespace `/admin`: who may connect, what a new admin socket is
//! sent, and the commands the UI sends back.
//!
//! Logins are checked in a connect middleware, so a refused UI gets the
//! `connect_error` whose message it looks for (`invalid credentials`);
//! the session id is sent from the connect handler, after the client knows
//! it is connected (Node's server sends it earlier and the UI loses it).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use serde::Deserialize;
use serde_json::Value;
use socketioxide::extract::{State, TryData};
use socketioxide::handler::ConnectHandler;
use socketioxide::socket::Sid;

use super::{Admin, AdminMode, NAMESPACE, feed};
use crate::bus::{NamespaceReady, SocketIo, SocketRef};
use crate::conversation::ConversationId;
use crate::refusal::{Code, Refusal};
use crate::sockets::{Caps, USER_ROOM_PREFIX, peer_addr};

/// What the namespace's handlers are given, as a socketioxide state beside
/// the app's own: the Admin UI, the client-address rule its login limit
/// keys on, and the conversations the UI's `join` and `leave` commands
/// move sockets in and out of. The app supplies it, so this module needs
/// nothing of the handlers of namespace `/`.
#[derive(Clone)]
pub struct AdminContext {
    pub admin: Admin,
    pub caps: Arc<Caps>,
    pub conversations: Arc<dyn Conversations>,
}

/// Moves a socket of namespace `/` into or out of a conversation on an
/// operator's command, as its own `join_conversation` or
/// `leave_conversation` would; `true` if something changed.
pub trait Conversations: Send + Sync + 'static {
    fn move_socket<'a>(
        &'a self,
        socket: &'a SocketRef,
        io: &'a SocketIo,
        room: &'a ConversationId,
        join: bool,
    ) -> Pin<Box<dyn Future<Output = bool> + Send + 'a>>;
}

/// The message the UI recognises (it compares it).
const INVALID_CREDENTIALS: &str = "invalid credentials";

fn invalid_credentials() -> Refusal {
    Code::InvalidCredentials.with(INVALID_CREDENTIALS)
}

/// The handshake's `auth`, in either of the UI's two shapes. No `Debug`:
/// it holds a password.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Login {
    session_id: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

/// Counts an admin socket as watching while it lives.
#[derive(Debug)]
struct Watching(Admin);

impl Watching {
    fn new(admin: &Admin) -> Self {
        admin.0.watching.fetch_add(1, Ordering::Relaxed);
        Watching(admin.clone())
    }
}

impl Drop for Watching {
    fn drop(&mut self) {
        self.0.0.watching.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A session created by this handshake, to be sent once connected.
#[derive(Debug, Clone)]
struct NewSession(String);

pub fn register(io: &SocketIo) -> NamespaceReady {
    io.ns(NAMESPACE, on_connect.with(authenticate))
}

async fn authenticate(
    socket: SocketRef,
    TryData(login): TryData<Login>,
    State(context): State<AdminContext>,
) -> Result<(), Refusal> {
    let admin = &context.admin;
    let Some(credentials) = &admin.0.options.credentials else {
        return Ok(());
    };
    let login = login.unwrap_or_default();
    let now = Instant::now();
    if let Some(id) = &login.session_id
        && admin.0.sessions.valid(id, now)
    {
        return Ok(());
    }
    let (Some(user), Some(password)) = (login.username, login.password) else {
        return Err(invalid_credentials());
    };
    let client = context
        .caps
        .client_ip(peer_addr(&socket), &socket.req_parts().headers)
        .map(|ip| context.caps.key(ip));
    if !admin.may_try_login(client) {
        return Err(Code::RateLimited.with("too many login attempts; try again in a few seconds"));
    }
    let hash = credentials.password_hash.clone();
    // bcrypt is slow on purpose: off the runtime's threads. The hash is
    // checked whatever the user name, so timing does not tell which was
    // wrong.
    let password_ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
        .await
        .is_ok_and(|verified| verified.unwrap_or(false));
    let user_ok: bool =
        subtle::ConstantTimeEq::ct_eq(user.as_bytes(), credentials.user.as_bytes()).into();
    admin.login_ended(client, password_ok && user_ok);
    if !(password_ok && user_ok) {
        tracing::info!("Admin UI login refused");
        return Err(invalid_credentials());
    }
    socket
        .extensions
        .insert(NewSession(admin.0.sessions.create(now)));
    Ok(())
}

async fn on_connect(socket: SocketRef, State(context): State<AdminContext>, io: SocketIo) {
    let admin = &context.admin;
    // Dropped with the socket's extensions, however the socket ends.
    socket.extensions.insert(Arc::new(Watching::new(admin)));
    if let Some(NewSession(id)) = socket.extensions.get::<NewSession>() {
        socket.emit("session", &id).ok();
    }
    let options = &admin.0.options;
    let development = options.mode == AdminMode::Development;
    // Commands come from the UI's socket and room pages, which only
    // development mode fills; a read-only UI gets none.
    let commands = development && !options.readonly;
    let mut features = Vec::new();
    if commands {
        features.extend([
            "JOIN",
            "LEAVE",
            "DISCONNECT",
            "MJOIN",
            "MLEAVE",
            "MDISCONNECT",
        ]);
    }
    features.push("AGGREGATED_EVENTS");
    if development {
        features.push("ALL_EVENTS");
    }
    socket
        .emit(
            "config",
            &serde_json::json!({ "supportedFeatures": features }),
        )
        .ok();
    // At once, rather than up to 2 s later; no events, so none is counted
    // twice.
    socket
        .emit("server_stats", &admin.stats(&io, Vec::new()))
        .ok();
    if development {
        let sockets: Vec<Value> = io
            .of("/")
            .map(|ns| ns.sockets())
            .unwrap_or_default()
            .iter()
            .map(feed::serialize)
            .collect();
        socket.emit("all_sockets", &sockets).ok();
    }
    if commands {
        socket.on("join", on_join);
        socket.on("leave", on_leave);
        socket.on("_disconnect", on_disconnect_command);
    }
    tracing::info!(socket = %crate::telemetry::log_id(socket.id), "Admin UI connected");
}

/// The sockets of namespace `/` that a command's `filter` names: the socket
/// with that id, or else the members of the room of that name; everyone
/// when absent. (socketioxide puts no socket in a room named after its id,
/// as Node's server does, so ids are looked up first.)
fn targets(io: &SocketIo, nsp: &str, filter: Option<&str>) -> Vec<SocketRef> {
    if nsp != "/" {
        return Vec::new();
    }
    let Some(everyone) = io.of("/") else {
        return Vec::new();
    };
    match filter {
        None => everyone.sockets(),
        Some(filter) => match filter
            .parse::<Sid>()
            .ok()
            .and_then(|sid| everyone.get_socket(sid))
        {
            Some(socket) => vec![socket],
            None => everyone.within(filter.to_string()).sockets(),
        },
    }
}

/// The arguments of a command: `(nsp, second, filter?)`. The UI leaves
/// `filter` out to mean the whole namespace, which a plain tuple would
/// refuse; socketioxide hands a type that reads itself as a tuple all the
/// arguments.
#[derive(Debug)]
struct Command {
    nsp: String,
    second: Value,
    filter: Option<String>,
}

impl<'de> Deserialize<'de> for Command {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::{Error, IgnoredAny, SeqAccess, Visitor};
        struct Arguments;
        impl<'de> Visitor<'de> for Arguments {
            type Value = Command;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("the arguments (namespace, value, filter?)")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Command, A::Error> {
                let nsp = seq
                    .next_element()?
                    .ok_or_else(|| Error::invalid_length(0, &self))?;
                let second = seq
                    .next_element()?
                    .ok_or_else(|| Error::invalid_length(1, &self))?;
                let filter: Option<Option<String>> = seq.next_element()?;
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Command {
                    nsp,
                    second,
                    filter: filter.flatten(),
                })
            }
        }
        deserializer.deserialize_tuple(3, Arguments)
    }
}

async fn on_join(
    io: SocketIo,
    TryData(command): TryData<Command>,
    State(context): State<AdminContext>,
) {
    move_sockets(&io, command, &context, true).await;
}

async fn on_leave(
    io: SocketIo,
    TryData(command): TryData<Command>,
    State(context): State<AdminContext>,
) {
    move_sockets(&io, command, &context, false).await;
}

/// `join(nsp, room, filter?)` and `leave(nsp, room, filter?)`. A room named
/// like a conversation is that conversation: the sockets become members
/// (or stop being members) as if they had joined it themselves, presence
/// included. Any other name is a plain Socket.IO room, except a user's
/// room, which stays as tally keeps it.
async fn move_sockets<E>(
    io: &SocketIo,
    command: Result<Command, E>,
    context: &AdminContext,
    join: bool,
) {
    let Ok(Command {
        nsp,
        second: Value::String(room),
        filter,
    }) = command
    else {
        return;
    };
    if room.starts_with(USER_ROOM_PREFIX) {
        return;
    }
    let conversation = ConversationId::parse(&room).ok();
    for socket in targets(io, &nsp, filter.as_deref()) {
        let moved = match &conversation {
            Some(id) => {
                context
                    .conversations
                    .move_socket(&socket, io, id, join)
                    .await
            }
            None => {
                let inside = socket.rooms().iter().any(|r| *r == room);
                match (join, inside) {
                    (true, false) => socket.join(room.clone()),
                    (false, true) => socket.leave(room.clone()),
                    _ => continue,
                }
                true
            }
        };
        if moved && join {
            context.admin.room_joined(&socket, &room);
        } else if moved {
            context.admin.room_left(&socket, &room);
        }
    }
}

/// `_disconnect(nsp, close, filter?)`: each socket here has its own
/// connection, so closing it and leaving the namespace come to the same.
async fn on_disconnect_command(io: SocketIo, TryData(command): TryData<Command>) {
    let Ok(Command { nsp, filter, .. }) = command else {
        return;
    };
    for socket in targets(&io, &nsp, filter.as_deref()) {
        tracing::info!(socket = %crate::telemetry::log_id(socket.id), "disconnected from the Admin UI");
        socket.disconnect().ok();
    }
}
