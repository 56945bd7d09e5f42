//! Command-line and environment configuration.
//!
//! Every option is a `--kebab-case` flag with a `TALLY_SNAKE_CASE` environment
//! variable. Values are validated while parsing, so a bad value stops the
//! process before anything starts and the error names the option. Options
//! come in groups, one per concern ([`groups`]); the types their values
//! take are in [`values`]. This module sits below everything it configures:
//! it imports no other part of tally.

pub mod groups;
pub mod values;

use clap::{Args, FromArgMatches, Parser, Subcommand};
use std::net::SocketAddr;

pub use groups::{
    AdminConfig, AuthConfig, BroadcastConfig, CapsConfig, ClusterConfig, ConversationConfig,
    DatabaseConfig, EventLimits, ServingConfig, SocketConfig,
};
pub use values::{
    AdminMode, AllowedOrigin, AuthMode, Limit, LogFormat, MIN_API_KEY_LEN, MIN_SECRET_LEN, Secret,
    Transport,
};

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

/// Server configuration: the address and the logs, then one group per
/// concern.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on; port 0 picks a free port (the bound address is logged).
    #[arg(long, env = "TALLY_ADDR", default_value = "127.0.0.1:3000")]
    pub addr: SocketAddr,

    /// How log lines are written: `human` (readable lines) or `json` (one
    /// JSON object per line, for log collectors).
    #[arg(long, env = "TALLY_LOG_FORMAT", value_enum, default_value = "human")]
    pub log_format: LogFormat,

    /// Log filter in `tracing` syntax, e.g. `info` or `tally=debug,info`.
    /// When not given, `RUST_LOG` is used, and `info` when neither is set.
    #[arg(long, env = "TALLY_LOG")]
    pub log: Option<String>,

    #[command(flatten)]
    pub database: DatabaseConfig,
    #[command(flatten)]
    pub socket: SocketConfig,
    #[command(flatten)]
    pub broadcast: BroadcastConfig,
    #[command(flatten)]
    pub auth: AuthConfig,
    #[command(flatten)]
    pub conversations: ConversationConfig,
    #[command(flatten)]
    pub limits: EventLimits,
    #[command(flatten)]
    pub caps: CapsConfig,
    #[command(flatten)]
    pub admin: AdminConfig,
    #[command(flatten)]
    pub serving: ServingConfig,
    #[command(flatten)]
    pub cluster: ClusterConfig,
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
        config.database.url = database_url.into();
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

    /// Durable mode (`--flush-interval 0`): a click is acknowledged once it
    /// is stored.
    pub fn durable(&self) -> bool {
        self.database.flush_interval.is_zero()
    }

    /// Checks the rules that involve several options.
    pub fn validate(&self) -> Result<(), ConfigError> {
        // The command line refuses these at zero already; a host that builds
        // a `Config` in code gets the same answer instead of a background
        // task that panics on a zero period.
        let positive = [
            ("--database-timeout", Some(self.database.timeout)),
            (
                "--health-check-interval",
                Some(self.database.health_check_interval),
            ),
            ("--ping-interval", Some(self.socket.ping_interval)),
            ("--ping-timeout", Some(self.socket.ping_timeout)),
            ("--token-ttl", Some(self.auth.token_ttl)),
            (
                "--leaderboard-interval",
                Some(self.broadcast.leaderboard_interval),
            ),
            ("--admin-session-ttl", Some(self.admin.session_ttl)),
            ("--shutdown-timeout", Some(self.serving.shutdown_timeout)),
            (
                "--header-read-timeout",
                Some(self.serving.header_read_timeout),
            ),
            ("--message-retention", self.conversations.message_retention),
            (
                "--heartbeat-interval",
                Some(self.cluster.heartbeat_interval),
            ),
            ("--peer-timeout", Some(self.cluster.peer_timeout)),
        ];
        if let Some((option, _)) = positive
            .into_iter()
            .find(|(_, every)| every.is_some_and(|every| every.is_zero()))
        {
            return Err(ConfigError::ZeroDuration(option));
        }
        match (&self.auth.jwt_secret, self.auth.mode) {
            (None, AuthMode::Token) => return Err(ConfigError::MissingSecret),
            (Some(secret), _) if secret.0.len() < MIN_SECRET_LEN => {
                return Err(ConfigError::ShortSecret);
            }
            _ => {}
        }
        let short = |key: &Option<Secret>| {
            key.as_ref()
                .is_some_and(|key| key.0.len() < MIN_API_KEY_LEN)
        };
        if short(&self.conversations.api_key) {
            return Err(ConfigError::ShortApiKey);
        }
        if short(&self.admin.token) {
            return Err(ConfigError::ShortAdminToken);
        }
        if self.admin.ui && self.admin.password_hash.is_none() && !self.admin.no_auth {
            return Err(ConfigError::AdminCredentials);
        }
        // Checked for shape at start, so a mistyped hash is an error naming
        // the option rather than every login failing. Its value is not
        // repeated: it may be a password pasted by mistake.
        if self
            .admin
            .password_hash
            .as_ref()
            .is_some_and(|hash| hash.0.parse::<bcrypt::HashParts>().is_err())
        {
            return Err(ConfigError::NotABcryptHash);
        }
        if self.cluster.redis_url.is_some() {
            if self.database.url.starts_with("sqlite") {
                return Err(ConfigError::ClusterNeedsSharedDatabase);
            }
            if self.cluster.peer_timeout <= self.cluster.heartbeat_interval {
                return Err(ConfigError::PeerTimeoutTooShort);
            }
        }
        match (
            &self.conversations.message_webhook,
            &self.conversations.webhook_secret,
        ) {
            (Some(_), None) => Err(ConfigError::MissingWebhookSecret),
            (None, Some(_)) => Err(ConfigError::WebhookSecretWithoutWebhook),
            _ => Ok(()),
        }
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
    #[error(
        "--redis-url (TALLY_REDIS_URL) needs a database every node shares: a postgres:// or \
         mysql:// --database-url (an SQLite file belongs to one process)"
    )]
    ClusterNeedsSharedDatabase,
    #[error("--peer-timeout (TALLY_PEER_TIMEOUT) must be longer than --heartbeat-interval")]
    PeerTimeoutTooShort,
}

/// Hides a password in a URL (a database's or Redis's) before it reaches a
/// log or an error message.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://***{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::time::Duration;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    /// The README's configuration table is checked against clap's own
    /// definitions, so a changed default cannot leave the docs behind.
    #[test]
    fn the_readme_table_shows_every_default_clap_applies() {
        let readme = include_str!("../../README.md");
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
            config.socket.allowed_origins,
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
            !ok.auth.guest_login(),
            "guest login is off by default in token mode"
        );
        assert!(parse(&[]).auth.guest_login(), "and on in open mode");
        assert!(!parse(&["--guest-login", "false"]).auth.guest_login());
        assert!(
            !format!("{ok:?}").contains("kkkk"),
            "the secret never shows in Debug output"
        );
    }

    #[test]
    fn conversation_options_are_checked_together() {
        let parse = |args: &[&str]| Cli::parse_from([&["tally"], args].concat()).serve;
        assert_eq!(parse(&[]).conversations.history_size, 50);
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
        zero.database.health_check_interval = Duration::ZERO;
        assert_eq!(
            zero.validate(),
            Err(ConfigError::ZeroDuration("--health-check-interval"))
        );
        let mut zero = ok.clone();
        zero.conversations.message_retention = Some(Duration::ZERO);
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
