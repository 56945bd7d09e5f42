//! Command-line and environment configuration.
//!
//! Every option is a `--kebab-case` flag with a `TALLY_SNAKE_CASE` environment
//! variable. Values are validated while parsing, so a bad value stops the
//! process before anything starts and the error names the option.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, FromArgMatches, Parser, Subcommand};

pub use crate::auth::AuthMode;
use crate::auth::MIN_SECRET_LEN;
pub use crate::realtime::limits::Limit;

/// tally: a real-time click tracker speaking Socket.IO.
#[derive(Debug, Parser)]
#[command(name = "tally", version, about, args_conflicts_with_subcommands = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Options for `serve`, accepted without the subcommand too, because
    /// plain `tally` runs the server.
    #[command(flatten)]
    pub serve: Config,
}

impl Cli {
    /// The command to run; plain `tally` means `tally serve`.
    pub fn into_command(self) -> Command {
        self.command
            .unwrap_or_else(|| Command::Serve(Box::new(self.serve)))
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the click tracker server (the default).
    Serve(Box<Config>),
    /// Read a password (typed at a prompt, or one line on standard input)
    /// and print its bcrypt hash, for `--admin-password-hash`.
    HashPassword {
        /// bcrypt's cost: each step doubles the work of a check, for an
        /// attacker as for the server.
        #[arg(long, default_value_t = 12, value_parser = clap::value_parser!(u32).range(4..=31))]
        cost: u32,
    },
}

/// Server configuration.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "TALLY_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// Database URL; the scheme picks the backend: `sqlite://PATH` (created if
    /// missing) is the embedded default, `postgres://USER:PASS@HOST/DB` and
    /// `mysql://USER:PASS@HOST/DB` (MySQL 8, MariaDB 10.6+) use a server.
    #[arg(long, env = "TALLY_DATABASE_URL", default_value = "sqlite://tally.db")]
    pub database_url: String,

    /// Most database connections open at once (SQLite in memory uses one).
    #[arg(long, env = "TALLY_DATABASE_POOL_SIZE", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub database_pool_size: u32,

    /// How long connecting to the database, or waiting for a free connection
    /// (SQLite: for another process's write lock), may take before the
    /// operation fails: at start-up that stops the server, later the flush is
    /// retried.
    #[arg(long, env = "TALLY_DATABASE_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    pub database_timeout: Duration,

    /// How often the database is asked whether it answers. `/healthz` and
    /// `/readyz` report the last answer rather than querying on every
    /// request, so a health check costs no query and never waits for one;
    /// an outage shows within this interval (plus `--database-timeout` when
    /// the database hangs rather than refuses).
    #[arg(long, env = "TALLY_HEALTH_CHECK_INTERVAL", default_value = "1s", value_parser = parse_positive_duration)]
    pub health_check_interval: Duration,

    /// Origins allowed to open Socket.IO connections from a browser, as a comma
    /// list of `scheme://host[:port]`, or `*` for any. Empty means the page's own
    /// origin only. Clients that send no `Origin` header (non-browser) are always
    /// allowed.
    #[arg(
        long,
        env = "TALLY_ALLOWED_ORIGINS",
        value_delimiter = ',',
        value_parser = parse_origin
    )]
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

    /// How often counts are written to the database (write-behind). `0` is
    /// durable mode: every click is written before it is acknowledged, the
    /// clicks waiting at one moment in one transaction (group commit).
    #[arg(long, env = "TALLY_FLUSH_INTERVAL", default_value = "1s", value_parser = parse_duration)]
    pub flush_interval: Duration,

    /// Least time between two `count` broadcasts. Clicks inside the window are
    /// coalesced into one trailing broadcast of the latest total; `0` broadcasts
    /// after every click.
    #[arg(long, env = "TALLY_BROADCAST_INTERVAL", default_value = "10ms", value_parser = parse_duration)]
    pub broadcast_interval: Duration,

    /// Broadcast time set aside per connected socket: a `count` broadcast to
    /// N sockets is followed by the next one at least N times this after it
    /// started (and at least `--broadcast-interval`), so a large audience
    /// gets fewer, fresher updates instead of a growing send queue. The default, 5µs,
    /// changes nothing up to 2,000 sockets and spaces broadcasts 50 ms apart
    /// at 10,000. `0` turns it off; it has no effect with
    /// `--broadcast-interval 0`.
    #[arg(long, env = "TALLY_BROADCAST_BUDGET", default_value = "5us", value_parser = parse_duration)]
    pub broadcast_budget: Duration,

    /// How Socket.IO clients identify themselves: `open` (a token, a bare
    /// username, or nothing for anonymous clicks) or `token` (a valid JWT on
    /// every connection).
    #[arg(long, env = "TALLY_AUTH", value_enum, default_value = "open")]
    pub auth: AuthMode,

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

    /// Least time between two `leaderboard` broadcasts.
    #[arg(long, env = "TALLY_LEADERBOARD_INTERVAL", default_value = "500ms", value_parser = parse_positive_duration)]
    pub leaderboard_interval: Duration,

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
    /// Rate limit of `click` per socket and per user, as RATE:BURST (events
    /// per second, and how many may come at once); `0` for none.
    #[arg(long, env = "TALLY_CLICK_LIMIT", default_value = "20:40")]
    pub click_limit: Limit,
    /// Rate limit of `message`, per socket and per user (RATE:BURST, `0`
    /// for none).
    #[arg(long, env = "TALLY_MESSAGE_LIMIT", default_value = "5:10")]
    pub message_limit: Limit,
    /// Rate limit of `typing`, per socket and per user (RATE:BURST, `0` for
    /// none).
    #[arg(long, env = "TALLY_TYPING_LIMIT", default_value = "3:6")]
    pub typing_limit: Limit,
    /// Rate limit of `join_conversation`, per socket and per user
    /// (RATE:BURST, `0` for none).
    #[arg(long, env = "TALLY_JOIN_LIMIT", default_value = "5:20")]
    pub join_limit: Limit,
    /// Rate limit of `refresh`, per socket and per user (RATE:BURST, `0`
    /// for none).
    #[arg(long, env = "TALLY_REFRESH_LIMIT", default_value = "1:5")]
    pub refresh_limit: Limit,
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
    /// Token an operator's tools send as `Authorization: Bearer <token>` to
    /// the monitoring API (`/api/admin/connections`, `/api/admin/stats`); at
    /// least 16 bytes. Unset, those endpoints answer 404.
    #[arg(long, env = "TALLY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<Secret>,
    /// Serve the official Socket.IO Admin UI at `/admin/` and its
    /// namespace `/admin` (see `--admin-user`, `--admin-password-hash`,
    /// `--admin-mode`).
    #[arg(long, env = "TALLY_ADMIN")]
    pub admin: bool,
    /// The Admin UI's user name.
    #[arg(long, env = "TALLY_ADMIN_USER", default_value = "admin")]
    pub admin_user: String,
    /// bcrypt hash of the Admin UI's password (`tally hash-password` makes
    /// one). Required with `--admin` unless `--admin-no-auth` is given.
    #[arg(long, env = "TALLY_ADMIN_PASSWORD_HASH", hide_env_values = true)]
    pub admin_password_hash: Option<Secret>,
    /// Let anyone who reaches the server use the Admin UI, without a
    /// password. Only for a server nobody else can reach.
    #[arg(long, env = "TALLY_ADMIN_NO_AUTH")]
    pub admin_no_auth: bool,
    /// `aggregated`: the Admin UI gets totals every 2 s, for an atomic add
    /// per event. `development`: also every socket, room and event as they
    /// happen, and the UI can move sockets between rooms and disconnect
    /// them; this costs work on every event and the UI slows down beyond a
    /// few thousand sockets.
    #[arg(
        long,
        env = "TALLY_ADMIN_MODE",
        value_enum,
        default_value = "aggregated"
    )]
    pub admin_mode: crate::admin::AdminMode,
    /// The Admin UI may watch but not act (no join, leave or disconnect).
    #[arg(long, env = "TALLY_ADMIN_READONLY")]
    pub admin_readonly: bool,
    /// How long an Admin UI login lasts before the password is asked again.
    #[arg(long, env = "TALLY_ADMIN_SESSION_TTL", default_value = "12h", value_parser = parse_positive_duration)]
    pub admin_session_ttl: Duration,
    /// How long shutdown may wait for sockets to close, and then for HTTP
    /// requests to finish, before it goes on (the final write of counts
    /// always happens).
    #[arg(long, env = "TALLY_SHUTDOWN_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub shutdown_timeout: Duration,
    /// How long a client may take to send its request headers before the
    /// connection is closed, so clients that send them byte by byte
    /// (slowloris) cannot hold connections. Also how long an idle
    /// keep-alive connection is kept.
    #[arg(long, env = "TALLY_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    pub header_read_timeout: Duration,
    /// Serve `/metrics` (Prometheus) on this address instead of the main
    /// one, e.g. to keep it off the public port.
    #[arg(long, env = "TALLY_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// How log lines are written: `human` (readable lines) or `json` (one
    /// JSON object per line, for log collectors).
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: crate::telemetry::LogFormat,
    /// Log filter in `tracing` syntax, e.g. `info` or `tally=debug,info`.
    /// When not given, `RUST_LOG` is used, and `info` when neither is set.
    #[arg(long, env = "TALLY_LOG")]
    pub log: Option<String>,
}

impl Config {
    /// A configuration with every documented default, listening on `addr`
    /// with the store at `database_url`. Nothing is read from the
    /// environment, so the result does not depend on the caller's shell.
    pub fn new(addr: SocketAddr, database_url: impl Into<String>) -> Self {
        let command = Config::augment_args(clap::Command::new("tally"))
            .mut_args(|arg| arg.env(None::<&'static str>));
        let matches = command
            .try_get_matches_from(["tally"])
            .expect("every option has a default or is optional");
        let mut config = Config::from_arg_matches(&matches).expect("the defaults are valid values");
        config.addr = addr;
        config.database_url = database_url.into();
        config
    }

    /// The configuration `tally serve` would use with no flags: every
    /// `TALLY_*` environment variable applied over the defaults. This is how
    /// a host application that embeds tally reads tally's settings; an
    /// invalid value is an error naming the option.
    pub fn from_env() -> Result<Self, clap::Error> {
        let matches =
            Config::augment_args(clap::Command::new("tally")).try_get_matches_from(["tally"])?;
        Config::from_arg_matches(&matches)
    }

    /// Checks the rules that involve several options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The command line refuses these at zero already; a host that builds
        // a `Config` in code gets the same answer instead of a background
        // task that panics on a zero period.
        let positive = [
            ("--database-timeout", self.database_timeout),
            ("--health-check-interval", self.health_check_interval),
            ("--ping-interval", self.ping_interval),
            ("--ping-timeout", self.ping_timeout),
            ("--token-ttl", self.token_ttl),
            ("--leaderboard-interval", self.leaderboard_interval),
            ("--admin-session-ttl", self.admin_session_ttl),
            ("--shutdown-timeout", self.shutdown_timeout),
            ("--header-read-timeout", self.header_read_timeout),
        ];
        let retention = ("--message-retention", self.message_retention);
        if let Some((option, _)) = positive
            .into_iter()
            .chain(retention.1.map(|every| (retention.0, every)))
            .find(|(_, every)| every.is_zero())
        {
            return Err(ConfigError::ZeroDuration(option));
        }
        match (&self.jwt_secret, self.auth) {
            (None, AuthMode::Token) => return Err(ConfigError::MissingSecret),
            (Some(secret), _) if secret.0.len() < MIN_SECRET_LEN => {
                return Err(ConfigError::ShortSecret);
            }
            _ => {}
        }
        if self
            .api_key
            .as_ref()
            .is_some_and(|key| key.0.len() < MIN_API_KEY_LEN)
        {
            return Err(ConfigError::ShortApiKey);
        }
        if self
            .admin_token
            .as_ref()
            .is_some_and(|token| token.0.len() < MIN_API_KEY_LEN)
        {
            return Err(ConfigError::ShortAdminToken);
        }
        if self.admin && self.admin_password_hash.is_none() && !self.admin_no_auth {
            return Err(ConfigError::AdminCredentials);
        }
        // Checked for shape at start, so a mistyped hash is an error naming
        // the option rather than every login failing. Its value is not
        // repeated: it may be a password pasted by mistake.
        if self
            .admin_password_hash
            .as_ref()
            .is_some_and(|hash| hash.0.parse::<bcrypt::HashParts>().is_err())
        {
            return Err(ConfigError::NotABcryptHash);
        }
        match (&self.message_webhook, &self.webhook_secret) {
            (Some(_), None) => Err(ConfigError::MissingWebhookSecret),
            (None, Some(_)) => Err(ConfigError::WebhookSecretWithoutWebhook),
            _ => Ok(()),
        }
    }

    /// The rate limits, in the order of [`crate::realtime::limits::Kind`].
    pub fn limits(&self) -> crate::realtime::limits::Limits {
        crate::realtime::limits::Limits::new([
            self.click_limit,
            self.message_limit,
            self.typing_limit,
            self.join_limit,
            self.refresh_limit,
        ])
    }

    /// The store's connection settings.
    pub fn store_options(&self) -> crate::store::StoreOptions {
        crate::store::StoreOptions {
            pool_size: self.database_pool_size,
            timeout: self.database_timeout,
        }
    }

    /// Whether guest login is on, after applying the mode's default.
    pub fn guest_login(&self) -> bool {
        self.guest_login.unwrap_or(self.auth == AuthMode::Open)
    }

    /// True when the given transport is enabled.
    pub fn allows(&self, transport: Transport) -> bool {
        self.transports.contains(&transport)
    }
}

/// A configuration that parses but cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("--jwt-secret (TALLY_JWT_SECRET) is required with --auth token")]
    MissingSecret,
    #[error("--jwt-secret (TALLY_JWT_SECRET) must be at least {MIN_SECRET_LEN} bytes")]
    ShortSecret,
    #[error("--api-key (TALLY_API_KEY) must be at least {MIN_API_KEY_LEN} bytes")]
    ShortApiKey,
    #[error("--admin-token (TALLY_ADMIN_TOKEN) must be at least {MIN_API_KEY_LEN} bytes")]
    ShortAdminToken,
    #[error(
        "--message-webhook (TALLY_MESSAGE_WEBHOOK) needs --webhook-secret (TALLY_WEBHOOK_SECRET): \
         the receiver checks each delivery's signature with it"
    )]
    MissingWebhookSecret,
    #[error("--webhook-secret (TALLY_WEBHOOK_SECRET) is set but --message-webhook is not")]
    WebhookSecretWithoutWebhook,
    #[error(
        "--admin (TALLY_ADMIN) needs --admin-password-hash (TALLY_ADMIN_PASSWORD_HASH; \
         `tally hash-password` makes one), or --admin-no-auth to open the Admin UI to \
         anyone who can reach the server"
    )]
    AdminCredentials,
    #[error(
        "--admin-password-hash (TALLY_ADMIN_PASSWORD_HASH) is not a bcrypt hash \
         (like $2b$12$…, 60 characters); `tally hash-password` makes one"
    )]
    NotABcryptHash,
    #[error("{0} must be longer than zero")]
    ZeroDuration(&'static str),
}

/// Shortest accepted `--api-key` and `--admin-token`.
pub const MIN_API_KEY_LEN: usize = 16;

/// A secret string that never shows up in logs or `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl std::str::FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

/// A Socket.IO transport that can be switched on or off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    Websocket,
    Polling,
}

/// One entry of `--allowed-origins`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowedOrigin {
    /// `*`: any origin may connect.
    Any,
    /// One exact origin, normalised to lower case without a trailing slash.
    Exact(String),
}

fn parse_origin(raw: &str) -> Result<AllowedOrigin, String> {
    let raw = raw.trim();
    if raw == "*" {
        return Ok(AllowedOrigin::Any);
    }
    let origin = raw.trim_end_matches('/').to_ascii_lowercase();
    let rest = origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .ok_or_else(|| format!("`{raw}` is not an origin: expected scheme://host[:port] or `*`"))?;
    if rest.is_empty() || rest.contains(['/', '?', '#', ' ']) {
        return Err(format!(
            "`{raw}` is not an origin: expected scheme://host[:port] with no path"
        ));
    }
    Ok(AllowedOrigin::Exact(origin))
}

fn parse_proxy(raw: &str) -> Result<ipnet::IpNet, String> {
    let raw = raw.trim();
    raw.parse::<ipnet::IpNet>()
        .or_else(|_| raw.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map_err(|_| format!("`{raw}`: expected an address or a CIDR block, e.g. 10.0.0.0/8"))
}

fn parse_webhook_url(raw: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("`{raw}`: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{raw}`: expected an http:// or https:// URL"));
    }
    Ok(url)
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    if raw.trim() == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(raw).map_err(|e| format!("`{raw}`: {e} (examples: 10ms, 1s, 2m)"))
}

fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    let duration = parse_duration(raw)?;
    if duration.is_zero() {
        return Err(format!("`{raw}`: must be greater than zero"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The README's configuration table is checked against clap's own
    /// definitions, so a changed default cannot leave the docs behind.
    #[test]
    fn the_readme_table_shows_every_default_clap_applies() {
        let readme = include_str!("../README.md");
        let command = Config::augment_args(clap::Command::new("tally"));
        let mut checked = 0;
        for arg in command.get_arguments() {
            let Some(flag) = arg.get_long() else { continue };
            let row = readme
                .lines()
                .find(|line| line.starts_with(&format!("| `--{flag}` |")))
                .unwrap_or_else(|| panic!("the README has a row for --{flag}"));
            let documented = row.split(" | ").nth(2).expect("a default column");
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|value| value.to_string_lossy().into_owned())
                .collect();
            if defaults.is_empty() {
                // Computed defaults (a random secret, the mode's choice) are
                // described in words; they must still be described.
                assert!(
                    !documented.trim().is_empty(),
                    "--{flag} has no documented default"
                );
            } else {
                assert_eq!(
                    documented,
                    format!("`{}`", defaults.join(",")),
                    "README default of --{flag}"
                );
            }
            checked += 1;
        }
        assert!(checked >= 15, "only {checked} options found");
    }

    #[test]
    fn serve_subcommand_and_plain_invocation_agree() {
        let plain = Cli::parse_from(["tally", "--addr", "127.0.0.1:0"]).into_command();
        let serve = Cli::parse_from(["tally", "serve", "--addr", "127.0.0.1:0"]).into_command();
        let (Command::Serve(a), Command::Serve(b)) = (plain, serve) else {
            panic!("both are `serve`");
        };
        assert_eq!(a.addr, b.addr);
        let hash = Cli::parse_from(["tally", "hash-password", "--cost", "4"]).into_command();
        assert!(matches!(hash, Command::HashPassword { cost: 4 }));
    }

    #[test]
    fn bad_values_name_the_option() {
        for args in [
            ["tally", "--broadcast-interval", "soon"],
            ["tally", "--flush-interval", "soon"],
            ["tally", "--transports", "carrier-pigeon"],
            ["tally", "--allowed-origins", "example.com"],
            ["tally", "--max-payload", "12"],
            ["tally", "--addr", "localhost"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(
                err.contains(args[1]),
                "error for {args:?} should name the option: {err}"
            );
        }
    }

    #[test]
    fn origins_are_normalised() {
        let config =
            Cli::parse_from(["tally", "--allowed-origins", "https://Example.com/,*"]).serve;
        assert_eq!(
            config.allowed_origins,
            [
                AllowedOrigin::Exact("https://example.com".into()),
                AllowedOrigin::Any
            ]
        );
    }

    #[test]
    fn token_mode_needs_a_long_enough_secret() {
        let parse = |args: &[&str]| Cli::parse_from([&["tally"], args].concat()).serve;
        assert_eq!(
            parse(&["--auth", "token"]).validate(),
            Err(ConfigError::MissingSecret)
        );
        assert_eq!(
            parse(&["--auth", "token", "--jwt-secret", "short"]).validate(),
            Err(ConfigError::ShortSecret)
        );
        let ok = parse(&["--auth", "token", "--jwt-secret", &"k".repeat(32)]);
        assert_eq!(ok.validate(), Ok(()));
        assert!(
            !ok.guest_login(),
            "guest login is off by default in token mode"
        );
        assert!(parse(&[]).guest_login(), "and on in open mode");
        assert!(!parse(&["--guest-login", "false"]).guest_login());
        assert!(
            !format!("{ok:?}").contains("kkkk"),
            "the secret never shows in Debug output"
        );
    }

    #[test]
    fn conversation_options_are_checked_together() {
        let parse = |args: &[&str]| Cli::parse_from([&["tally"], args].concat()).serve;
        assert_eq!(parse(&[]).history_size, 50);
        assert_eq!(
            parse(&["--api-key", "short"]).validate(),
            Err(ConfigError::ShortApiKey)
        );
        assert_eq!(
            parse(&["--message-webhook", "http://127.0.0.1:9/hook"]).validate(),
            Err(ConfigError::MissingWebhookSecret)
        );
        assert_eq!(
            parse(&["--webhook-secret", "s"]).validate(),
            Err(ConfigError::WebhookSecretWithoutWebhook)
        );
        let ok = parse(&[
            "--message-webhook",
            "https://bot.example/hook",
            "--webhook-secret",
            "s3cret",
            "--api-key",
            &"a".repeat(16),
            "--message-retention",
            "30d",
        ]);
        assert_eq!(ok.validate(), Ok(()));
        assert!(!format!("{ok:?}").contains("s3cret"));
        // A host's own `Config` is held to what the command line allows.
        let mut zero = ok.clone();
        zero.health_check_interval = Duration::ZERO;
        assert_eq!(
            zero.validate(),
            Err(ConfigError::ZeroDuration("--health-check-interval"))
        );
        let mut zero = ok.clone();
        zero.message_retention = Some(Duration::ZERO);
        assert_eq!(
            zero.validate(),
            Err(ConfigError::ZeroDuration("--message-retention"))
        );
        for args in [
            ["tally", "--message-webhook", "ftp://x/y"],
            ["tally", "--history-size", "0"],
            ["tally", "--message-retention", "0"],
        ] {
            let err = Cli::try_parse_from(args).unwrap_err().to_string();
            assert!(err.contains(args[1]), "{err}");
        }
    }
}
