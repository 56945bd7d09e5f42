//! [`TallyBuilder`]: from a [`Config`] (and optionally a store and the
//! host's identity hook) to a [`Tally`], doing at start everything that can
//! fail: check the options, open and migrate the store, load the counts.

use std::sync::Arc;
use std::time::Duration;

use socketioxide::{SocketIo, TransportType};
use socketioxide_redis::{RedisAdapterConfig, RedisAdapterCtr};
use tower::Layer;

use super::StartError;
use super::routes::Tally;
use super::tasks::{Background, HealthCheck, Webhook};
use crate::admin::{Admin, AdminContext, AdminOptions, Credentials};
use crate::auth::{Auth, Tokens};
use crate::bus::{Adapter, Bus};
use crate::cluster::Cluster;
use crate::config::{Config, Transport};
use crate::counter::Counters;
use crate::counter::leaderboard::LiveLeaderboard;
use crate::http::{self, OriginPolicy};
use crate::identity::{DynIdentityProvider, IdentityProvider};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::persist::message_log::MessageLog;
use crate::realtime;
use crate::sockets::{Caps, Connections};
use crate::state::AppState;
use crate::store::{self, Store, StoreOptions};
use crate::webhook::{self, WebhookConfig, WebhookQueue};

/// Bytes read from a WebSocket per system call.
const WS_READ_BUFFER: usize = 1024;

/// How long one webhook delivery may take.
const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(10);

/// Options for building a [`Tally`] beyond its [`Config`].
#[must_use = "a builder does nothing until `build` is awaited"]
pub struct TallyBuilder {
    pub(super) config: Config,
    pub(super) store: Option<Arc<dyn Store>>,
    pub(super) identity: Option<Arc<dyn DynIdentityProvider>>,
}

impl TallyBuilder {
    /// Uses this store instead of connecting to `config.database.url`
    /// (tests use it to inject failures; hosts can share a store they
    /// built).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Lets the host decide who each Socket.IO connection belongs to, instead
    /// of tally's token or username rule (see [`crate::identity`]).
    pub fn identity(mut self, provider: impl IdentityProvider) -> Self {
        self.identity = Some(Arc::new(provider));
        self
    }

    /// Checks the configuration, opens and migrates the store, loads the
    /// counts, and assembles the routes.
    pub async fn build(self) -> Result<Tally, StartError> {
        let TallyBuilder {
            config,
            store,
            identity,
        } = self;
        config.validate()?;
        let cluster = Cluster::connect(&config.cluster).await?;
        let store = match store {
            Some(store) => store,
            None => {
                let options = StoreOptions {
                    pool_size: config.database.pool_size,
                    timeout: config.database.timeout,
                };
                store::connect(&config.database.url, &options).await?
            }
        };
        let counters = Arc::new(Counters::from_totals(store.load().await?));
        tracing::info!(
            backend = store.backend(),
            total = counters.global().total(),
            "store ready"
        );
        let (messages, message_queue) = MessageLog::new();
        let state = AppState {
            leaderboard: Arc::new(LiveLeaderboard::new(&counters)),
            counters,
            store,
            store_health: Default::default(),
            auth: Arc::new(auth(&config)),
            identity,
            broadcast_interval: config.broadcast.interval,
            durable: config.durable(),
            connections: Connections::default(),
            messages,
            idempotency: Default::default(),
            metrics: Metrics::new(),
            draining: Default::default(),
            history_size: config.conversations.history_size as usize,
            api_key: secret(&config.conversations.api_key),
            admin_token: secret(&config.admin.token),
            rate: Default::default(),
            admin: admin(&config),
            limits: Arc::new(Limits::new(&config.limits)),
            cluster: cluster.clone(),
            caps: Arc::new(Caps {
                max_connections: config.caps.max_connections,
                max_per_ip: config.caps.max_connections_per_ip,
                trusted_proxies: config.caps.trusted_proxies.clone(),
                ipv6_prefix: config.caps.ipv6_prefix,
                connect_timeout: config.caps.connect_timeout,
            }),
        };
        let adapter = match &cluster {
            Some(cluster) => RedisAdapterCtr::new_with_driver(
                cluster.bus().clone(),
                RedisAdapterConfig::new().with_prefix(cluster.adapter_prefix().to_string()),
            ),
            // Detached: the adapter delivers to this node's sockets only.
            None => RedisAdapterCtr::new_with_driver(Bus::default(), RedisAdapterConfig::new()),
        };
        let mut builder = socket_io_builder(&config)
            .with_adapter::<Adapter>(adapter)
            .with_state(state.clone());
        if let Some(admin) = &state.admin {
            builder = builder.with_state(AdminContext {
                admin: admin.clone(),
                caps: state.caps.clone(),
                conversations: Arc::new(realtime::Operator(state.clone())),
            });
        }
        // One service for every Socket.IO route: each instance owns its own
        // table of engine.io sessions, so a second one would not know the
        // sessions the first opened.
        let (socket_layer, io) = builder.build_layer();
        // The inner route is never reached on Socket.IO's path; the service
        // answers every request there itself.
        let socket_service = socket_layer.layer(axum::routing::any(http::not_found));
        // With Redis, a namespace exists once its channels are subscribed.
        realtime::register(&io).await.map_err(StartError::cluster)?;
        if let Some(admin) = &state.admin {
            admin.register(&io).await.map_err(StartError::cluster)?;
        }
        let background = Background {
            flush_interval: config.database.flush_interval,
            // Generous: a large flush is several statements, each of which
            // may wait up to the timeout for a lock or a connection.
            write_timeout: config.database.timeout * 6,
            leaderboard_interval: config.broadcast.leaderboard_interval,
            broadcast_budget: config.broadcast.budget,
            health_check: HealthCheck {
                every: config.database.health_check_interval,
                timeout: config.database.timeout,
            },
            message_queue,
            webhook: webhook(&config),
            message_retention: config.conversations.message_retention,
        };
        Ok(Tally {
            websocket: config.socket.allows(Transport::Websocket),
            policy: OriginPolicy::new(&config.socket.allowed_origins),
            state,
            io,
            socket_service,
            background,
            serving: config.serving.clone(),
        })
    }
}

/// The handshake rule: the mode, the token signer (with a random secret
/// when none is given, as open mode allows), and guest login.
fn auth(config: &Config) -> Auth {
    let secret = match &config.auth.jwt_secret {
        Some(secret) => secret.0.as_bytes().to_vec(),
        None => Tokens::random_secret(),
    };
    Auth {
        mode: config.auth.mode,
        tokens: Tokens::new(&secret, config.auth.token_ttl),
        guest_login: config.auth.guest_login(),
    }
}

fn secret(secret: &Option<crate::config::Secret>) -> Option<Arc<str>> {
    secret.as_ref().map(|secret| Arc::from(secret.0.as_str()))
}

/// The Admin UI's server side, with `--admin`.
fn admin(config: &Config) -> Option<Admin> {
    let options = &config.admin;
    options.ui.then(|| {
        Admin::new(AdminOptions {
            mode: options.mode,
            readonly: options.readonly,
            credentials: options.password_hash.as_ref().map(|hash| Credentials {
                user: options.user.clone(),
                password_hash: hash.0.clone(),
            }),
            session_ttl: options.session_ttl,
            clustered: config.cluster.redis_url.is_some(),
        })
    })
}

/// The message webhook, with `--message-webhook`.
fn webhook(config: &Config) -> Option<Webhook> {
    let options = &config.conversations;
    let (Some(url), Some(secret)) = (&options.message_webhook, &options.webhook_secret) else {
        return None;
    };
    let (queue, outbox) = WebhookQueue::new();
    Some(Webhook {
        queue,
        outbox,
        config: WebhookConfig {
            url: url.clone(),
            secret: secret.0.clone(),
            retry: webhook::Retry::default(),
            timeout: WEBHOOK_TIMEOUT,
        },
    })
}

fn socket_io_builder(config: &Config) -> socketioxide::SocketIoBuilder {
    let options = &config.socket;
    let max_payload = usize::try_from(options.max_payload).unwrap_or(usize::MAX);
    let builder = SocketIo::builder()
        .ping_interval(options.ping_interval)
        .ping_timeout(options.ping_timeout)
        .connect_timeout(config.caps.connect_timeout)
        .max_payload(options.max_payload)
        // engine.io applies `max_payload` to polling bodies only; these make
        // WebSocket messages obey the same limit.
        .ws_max_message_size(max_payload)
        .ws_max_frame_size(max_payload)
        // Client packets are a few dozen bytes; a 1 KiB read chunk instead of
        // the default 4 KiB saved about 3 KiB of RSS per idle WebSocket
        // connection (31 → 28 KiB, 3,000 connections, measured on this
        // project's machine). Larger messages still arrive, in more reads.
        .ws_read_buffer_size(WS_READ_BUFFER);
    match (
        options.allows(Transport::Websocket),
        options.allows(Transport::Polling),
    ) {
        (true, false) => builder.transports([TransportType::Websocket]),
        (false, true) => builder.transports([TransportType::Polling]),
        _ => builder.transports([TransportType::Polling, TransportType::Websocket]),
    }
}
