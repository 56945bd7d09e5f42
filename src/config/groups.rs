//! The option groups of [`Config`](super::Config), one per concern, each
//! flattened into the one command line (and shown under its own heading in
//! `--help`). Every option has a `TALLY_*` environment variable.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

use super::values::{
    AdminMode, AllowedOrigin, AuthMode, Limit, Secret, Transport, parse_duration, parse_origin,
    parse_positive_duration, parse_proxy, parse_webhook_url,
};

/// Where counts and messages are stored, and how often.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Database")]
pub struct DatabaseConfig {
    /// Database URL; the scheme picks the backend: `sqlite://PATH` (created if
    /// missing) is the embedded default, `postgres://USER:PASS@HOST/DB` and
    /// `mysql://USER:PASS@HOST/DB` (MySQL 8, MariaDB 10.6+) use a server.
    #[arg(
        id = "database_url",
        long = "database-url",
        env = "TALLY_DATABASE_URL",
        default_value = "sqlite://tally.db"
    )]
    pub url: String,

    /// Most database connections open at once (SQLite in memory uses one).
    #[arg(id = "database_pool_size", long = "database-pool-size", env = "TALLY_DATABASE_POOL_SIZE", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,

    /// How long connecting to the database, or waiting for a free connection
    /// (SQLite: for another process's write lock), may take before the
    /// operation fails: at start-up that stops the server, later the flush is
    /// retried.
    #[arg(id = "database_timeout", long = "database-timeout", env = "TALLY_DATABASE_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub timeout: Duration,

    /// How often the database is asked whether it answers. `/healthz` and
    /// `/readyz` report the last answer rather than querying on every
    /// request, so a health check costs no query and never waits for one;
    /// an outage shows within this interval (plus `--database-timeout` when
    /// the database hangs rather than refuses).
    #[arg(long, env = "TALLY_HEALTH_CHECK_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    pub health_check_interval: Duration,

    /// How often counts are written to the database (write-behind). `0` is
    /// durable mode: every click is written before it is acknowledged, the
    /// clicks waiting at one moment in one transaction (group commit).
    #[arg(long, env = "TALLY_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub flush_interval: Duration,
}

/// The Socket.IO side: who may connect, over what, how often pinged.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Socket.IO")]
pub struct SocketConfig {
    /// Origins allowed to open Socket.IO connections from a browser, as a comma
    /// list of `scheme://host[:port]`, or `*` for any. Empty means the page's own
    /// origin only. Clients that send no `Origin` header (non-browser) are always
    /// allowed.
    #[arg(long, env = "TALLY_ALLOWED_ORIGINS", value_delimiter = ',', value_parser = parse_origin)]
    pub allowed_origins: Vec<AllowedOrigin>,

    /// Socket.IO transports to accept: `websocket`, `polling`, or both as a comma list.
    #[arg(
        long,
        env = "TALLY_TRANSPORTS",
        value_delimiter = ',',
        value_enum,
        default_value = "websocket,polling"
    )]
    pub transports: Vec<Transport>,

    /// How often the server pings each client to check it is alive.
    #[arg(long, env = "TALLY_PING_INTERVAL", default_value = "25s", value_parser = parse_positive_duration)]
    pub ping_interval: Duration,

    /// How long the server waits for a ping answer before dropping the client.
    #[arg(long, env = "TALLY_PING_TIMEOUT", default_value = "20s", value_parser = parse_positive_duration)]
    pub ping_timeout: Duration,

    /// Largest Socket.IO payload accepted from a client, in bytes; larger
    /// packets close that client's connection.
    #[arg(long, env = "TALLY_MAX_PAYLOAD", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1024..))]
    pub max_payload: u64,
}

impl SocketConfig {
    /// True when the given transport is enabled.
    pub fn allows(&self, transport: Transport) -> bool {
        self.transports.contains(&transport)
    }
}

/// How changes reach the sockets.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Broadcasts")]
pub struct BroadcastConfig {
    /// Least time between two `count` broadcasts. Clicks inside the window are
    /// coalesced into one trailing broadcast of the latest total; `0` broadcasts
    /// after every click.
    #[arg(id = "broadcast_interval", long = "broadcast-interval", env = "TALLY_BROADCAST_INTERVAL", default_value = "10ms", value_parser = parse_duration)]
    pub interval: Duration,

    /// Broadcast time set aside per connected socket: a `count` broadcast to
    /// N sockets is followed by the next one at least N times this after it
    /// started (and at least `--broadcast-interval`), so a large audience
    /// gets fewer, fresher updates instead of a growing send queue. The default, 5µs,
    /// changes nothing up to 2,000 sockets and spaces broadcasts 50 ms apart
    /// at 10,000. `0` turns it off; it has no effect with
    /// `--broadcast-interval 0`.
    #[arg(id = "broadcast_budget", long = "broadcast-budget", env = "TALLY_BROADCAST_BUDGET", default_value = "5us", value_parser = parse_duration)]
    pub budget: Duration,

    /// Least time between two `leaderboard` broadcasts.
    #[arg(long, env = "TALLY_LEADERBOARD_INTERVAL", default_value = "500ms", value_parser = parse_positive_duration)]
    pub leaderboard_interval: Duration,
}

/// Who is clicking: tokens and sign-in.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Users and tokens")]
pub struct AuthConfig {
    /// How Socket.IO clients identify themselves: `open` (a token, a bare
    /// username, or nothing for anonymous clicks) or `token` (a valid JWT on
    /// every connection).
    #[arg(
        id = "auth",
        long = "auth",
        env = "TALLY_AUTH",
        value_enum,
        default_value = "open"
    )]
    pub mode: AuthMode,

    /// Secret that signs and checks HS256 tokens, at least 32 bytes. Required
    /// with `--auth token`. Without it, `--auth open` makes a random one at
    /// start, so its tokens do not survive a restart.
    #[arg(long, env = "TALLY_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<Secret>,

    /// Lifetime of the tokens issued by `POST /api/session`.
    #[arg(long, env = "TALLY_TOKEN_TTL", default_value = "1h", value_parser = parse_positive_duration)]
    pub token_ttl: Duration,

    /// Whether `POST /api/session` hands a token to anyone who names a free
    /// username (`true`/`false`). Default: on with `--auth open`, off with
    /// `--auth token`.
    #[arg(long, env = "TALLY_GUEST_LOGIN", action = clap::ArgAction::Set,
          value_parser = clap::builder::BoolishValueParser::new())]
    pub guest_login: Option<bool>,
}

impl AuthConfig {
    /// Whether guest login is on, after applying the mode's default.
    pub fn guest_login(&self) -> bool {
        self.guest_login.unwrap_or(self.mode == AuthMode::Open)
    }
}

/// Conversations: history, the backend's API and its webhook, retention.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Conversations")]
pub struct ConversationConfig {
    /// Messages a client receives when it joins a conversation (the latest
    /// ones), and the most returned by one catch-up (`since`) or one API
    /// read.
    #[arg(long, env = "TALLY_HISTORY_SIZE", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub history_size: u32,

    /// Key a backend (a bot, an AI assistant) sends as `Authorization:
    /// Bearer <key>` to post and read messages through
    /// `/api/conversations/…`; at least 16 bytes. Unset, those endpoints
    /// answer 404.
    #[arg(long, env = "TALLY_API_KEY", hide_env_values = true)]
    pub api_key: Option<Secret>,

    /// URL that every stored message is POSTed to as JSON, signed with
    /// `--webhook-secret`; failed deliveries are retried with backoff and
    /// never delay the chat.
    #[arg(long, env = "TALLY_MESSAGE_WEBHOOK", value_parser = parse_webhook_url)]
    pub message_webhook: Option<reqwest::Url>,

    /// Secret of the webhook's `X-Tally-Signature: sha256=<hex>` header
    /// (HMAC-SHA256 of the body). Required with `--message-webhook`.
    #[arg(long, env = "TALLY_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<Secret>,

    /// Delete chat messages older than this, in the background (e.g. `30d`).
    /// Unset keeps them forever.
    #[arg(long, env = "TALLY_MESSAGE_RETENTION", value_parser = parse_positive_duration)]
    pub message_retention: Option<Duration>,
}

/// The rate limit of each limited client event, per socket and per user
/// (see [`crate::events::ClientEvent::limit`], which names the field of
/// each event).
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Rate limits")]
pub struct EventLimits {
    /// Rate limit of `click` per socket and per user, as RATE:BURST (events
    /// per second, and how many may come at once); `0` for none.
    #[arg(
        id = "click_limit",
        long = "click-limit",
        env = "TALLY_CLICK_LIMIT",
        default_value = "20:40"
    )]
    pub click: Limit,
    /// Rate limit of `message`, per socket and per user (RATE:BURST, `0`
    /// for none).
    #[arg(
        id = "message_limit",
        long = "message-limit",
        env = "TALLY_MESSAGE_LIMIT",
        default_value = "5:10"
    )]
    pub message: Limit,
    /// Rate limit of `typing`, per socket and per user (RATE:BURST, `0` for
    /// none).
    #[arg(
        id = "typing_limit",
        long = "typing-limit",
        env = "TALLY_TYPING_LIMIT",
        default_value = "3:6"
    )]
    pub typing: Limit,
    /// Rate limit of `join_conversation`, per socket and per user
    /// (RATE:BURST, `0` for none).
    #[arg(
        id = "join_limit",
        long = "join-limit",
        env = "TALLY_JOIN_LIMIT",
        default_value = "5:20"
    )]
    pub join: Limit,
    /// Rate limit of `refresh`, per socket and per user (RATE:BURST, `0`
    /// for none).
    #[arg(
        id = "refresh_limit",
        long = "refresh-limit",
        env = "TALLY_REFRESH_LIMIT",
        default_value = "1:5"
    )]
    pub refresh: Limit,
    /// How fast one client address may create new usernames (RATE:BURST,
    /// `0` for none): a name is created by its first click and kept for
    /// ever, so junk names would otherwise grow the database and every
    /// start without bound.
    #[arg(
        id = "new_name_limit",
        long = "new-name-limit",
        env = "TALLY_NEW_NAME_LIMIT",
        default_value = "1:20"
    )]
    pub new_name: Limit,
    /// How fast one client address may create new conversations, by the
    /// first click in them (RATE:BURST, `0` for none).
    #[arg(
        id = "new_conversation_limit",
        long = "new-conversation-limit",
        env = "TALLY_NEW_CONVERSATION_LIMIT",
        default_value = "1:20"
    )]
    pub new_conversation: Limit,
}

impl EventLimits {
    /// No limit on any event.
    pub const NONE: EventLimits = EventLimits {
        click: Limit::NONE,
        message: Limit::NONE,
        typing: Limit::NONE,
        join: Limit::NONE,
        refresh: Limit::NONE,
        new_name: Limit::NONE,
        new_conversation: Limit::NONE,
    };
}

/// Caps on connections, and whose word to take for a client's address.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Connection caps")]
pub struct CapsConfig {
    /// Most Socket.IO connections at once; a new one over it is refused
    /// with 503. `0` for no cap.
    #[arg(long, env = "TALLY_MAX_CONNECTIONS", default_value_t = 0)]
    pub max_connections: usize,
    /// Most Socket.IO connections at once from one client address; `0` for
    /// no cap.
    #[arg(long, env = "TALLY_MAX_CONNECTIONS_PER_IP", default_value_t = 100)]
    pub max_connections_per_ip: usize,
    /// Proxies (comma list of addresses or CIDR blocks, e.g.
    /// `10.0.0.0/8,127.0.0.1`) whose `X-Forwarded-For` names the client;
    /// from anyone else the header is ignored.
    #[arg(long, env = "TALLY_TRUSTED_PROXIES", value_delimiter = ',', value_parser = parse_proxy)]
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// IPv6 clients in the same network of this many bits count as one
    /// address for the per-address caps and limits (one host is usually
    /// given a whole /64). `128` counts each address on its own.
    #[arg(
        long,
        env = "TALLY_IPV6_PREFIX",
        default_value_t = 64,
        value_parser = clap::value_parser!(u8).range(32..=128)
    )]
    pub ipv6_prefix: u8,
    /// How long an engine.io session may stay open without joining a
    /// namespace before it is closed (real clients join at once). Such
    /// sessions count against the caps from the moment they open.
    #[arg(long, env = "TALLY_CONNECT_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub connect_timeout: std::time::Duration,
}

/// The operator's tools: the monitoring API and the Socket.IO Admin UI.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Operators")]
pub struct AdminConfig {
    /// Token an operator's tools send as `Authorization: Bearer <token>` to
    /// the monitoring API (`/api/admin/connections`, `/api/admin/stats`); at
    /// least 16 bytes. Unset, those endpoints answer 404.
    #[arg(
        id = "admin_token",
        long = "admin-token",
        env = "TALLY_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub token: Option<Secret>,
    /// Serve the official Socket.IO Admin UI at `/admin/` and its
    /// namespace `/admin` (see `--admin-user`, `--admin-password-hash`,
    /// `--admin-mode`).
    #[arg(id = "admin", long = "admin", env = "TALLY_ADMIN")]
    pub ui: bool,
    /// The Admin UI's user name.
    #[arg(
        id = "admin_user",
        long = "admin-user",
        env = "TALLY_ADMIN_USER",
        default_value = "admin"
    )]
    pub user: String,
    /// bcrypt hash of the Admin UI's password (`tally hash-password` makes
    /// one). Required with `--admin` unless `--admin-no-auth` is given.
    #[arg(
        id = "admin_password_hash",
        long = "admin-password-hash",
        env = "TALLY_ADMIN_PASSWORD_HASH",
        hide_env_values = true
    )]
    pub password_hash: Option<Secret>,
    /// Let anyone who reaches the server use the Admin UI, without a
    /// password. Only for a server nobody else can reach.
    #[arg(
        id = "admin_no_auth",
        long = "admin-no-auth",
        env = "TALLY_ADMIN_NO_AUTH"
    )]
    pub no_auth: bool,
    /// `aggregated`: the Admin UI gets totals every 2 s, for an atomic add
    /// per event. `development`: also every socket, room and event as they
    /// happen, and the UI can move sockets between rooms and disconnect
    /// them; this costs work on every event and the UI slows down beyond a
    /// few thousand sockets.
    #[arg(
        id = "admin_mode",
        long = "admin-mode",
        env = "TALLY_ADMIN_MODE",
        value_enum,
        default_value = "aggregated"
    )]
    pub mode: AdminMode,
    /// The Admin UI may watch but not act (no join, leave or disconnect).
    #[arg(
        id = "admin_readonly",
        long = "admin-readonly",
        env = "TALLY_ADMIN_READONLY"
    )]
    pub readonly: bool,
    /// How long an Admin UI login lasts before the password is asked again.
    #[arg(id = "admin_session_ttl", long = "admin-session-ttl", env = "TALLY_ADMIN_SESSION_TTL", default_value = "12h", value_parser = parse_positive_duration)]
    pub session_ttl: Duration,
}

/// How the HTTP server treats its connections, and how long it may take
/// to stop.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Serving")]
pub struct ServingConfig {
    /// How long shutdown may spend storing the queued messages and closing
    /// the sockets together, and then waiting for HTTP requests to finish,
    /// before it goes on (the final write of counts always happens).
    #[arg(long, env = "TALLY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send its request headers before the
    /// connection is closed, so clients that send them byte by byte
    /// (slowloris) cannot hold connections. Also how long an idle
    /// keep-alive connection is kept.
    #[arg(long, env = "TALLY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,
    /// How long a write to a client may wait for the client to read before
    /// the connection is closed, so a client that stops reading cannot hold
    /// what is queued for it (`0` for no bound).
    #[arg(long, env = "TALLY_SEND_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub send_timeout: Duration,
    /// Serve `/metrics` (Prometheus) on this address instead of the main
    /// one, e.g. to keep it off the public port.
    #[arg(long, env = "TALLY_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
}

/// Cluster mode: several nodes behind one address, sharing one database
/// and one Redis.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Cluster")]
pub struct ClusterConfig {
    /// Redis URL (`redis://HOST:PORT`, `rediss://…` for TLS) that turns
    /// cluster mode on: rooms, chat, presence and totals reach every node
    /// sharing this Redis and the database. Needs a PostgreSQL or
    /// MySQL/MariaDB database (`--database-url`); Redis holds no counts.
    #[arg(long, env = "TALLY_REDIS_URL")]
    pub redis_url: Option<Secret>,
    /// Prefix of every Redis channel tally uses, so several clusters can
    /// share one Redis server.
    #[arg(long, env = "TALLY_REDIS_PREFIX", default_value = "tally")]
    pub redis_prefix: String,
    /// How often a node tells the others it is alive and how many of its
    /// sockets are in each conversation.
    #[arg(long, env = "TALLY_HEARTBEAT_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    pub heartbeat_interval: Duration,
    /// How long a node may stay silent before the others count it gone
    /// and drop its sockets from presence (longer than
    /// `--heartbeat-interval`).
    #[arg(long, env = "TALLY_PEER_TIMEOUT", default_value = "3s", value_parser = parse_positive_duration)]
    pub peer_timeout: Duration,
}
