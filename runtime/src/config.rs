//! Gateway configuration. Every bound has a default and a reason; see
//! `docs/protocol.md` §7 for the ones a client can see.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::kafka::cluster::ClusterConfig;
use crate::kafka::config::KafkaConfig;
use crate::registry::RegistryConfig;

/// Limits a gateway enforces. Build with [`Limits::default`] and the `with_*` setters.
///
/// With the `config` feature it is also read from configuration files (serde, every field
/// optional, durations as text like `10s` or `1m 30s`), and describes itself (schemars):
/// the `kafkasocks` binary's `[limits]` table is this struct, documented from these comments.
#[derive(Debug, Clone)]
#[cfg_attr(
    feature = "config",
    derive(serde::Serialize, serde::Deserialize, schemars::JsonSchema),
    serde(default, deny_unknown_fields)
)]
#[non_exhaustive]
pub struct Limits {
    /// Largest WebSocket message accepted from a client. Default 1 MiB (Kafka's default
    /// record limit). Larger: close 1009.
    pub max_message_bytes: usize,
    /// Connections served at once. Default 10,000 (an idle subscribed connection costs about
    /// 7.7 KB, one that caught up on a backlog about 30 KB: bench/ `memory`, `deploy`).
    /// More: refused before the upgrade with HTTP 503 and `Retry-After: 5`.
    pub max_connections: usize,
    /// Open subscriptions per connection. Default 64.
    pub max_subscriptions: usize,
    /// Sustained publishes per second per connection (token bucket with the same burst).
    /// Default 1000.
    pub max_publishes_per_second: u32,
    /// Publishes awaiting their receipt per connection. Default 256; with room for 16 more
    /// in [`Limits::send_queue_frames`] (every receipt must fit the control queue), checked
    /// when the gateway binds.
    pub max_inflight_publishes: usize,
    /// Credit a subscription gets when it asks for none. Default 1000 records.
    pub default_credit: u32,
    /// Most credit a subscription may hold. Default 100,000 records.
    pub max_credit: u32,
    /// Record bytes queued for one connection before its subscriptions pause.
    /// Default 1 MiB.
    pub send_queue_bytes: usize,
    /// Control frames (receipts, errors, pings) queued for one connection before it is
    /// closed as a slow consumer. Default 1024.
    pub send_queue_frames: usize,
    /// How long a connection's send queue may stay full before it is closed with 4008.
    /// Default 30 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub slow_consumer_timeout: Duration,
    /// How long a connection that is closing keeps trying to write its Close frame, and
    /// what is queued before it, to a peer that does not read; then it is dropped. A slow
    /// consumer's queued records and checkpoints are dropped first, so its 4008 is written
    /// as soon as it reads what its socket already holds. Once the Close is written the
    /// gateway reads on for the peer's Close while the peer keeps sending (at most 10 s and
    /// 32 MiB; 2 s of silence ends it). Default 10 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub close_timeout: Duration,
    /// Time a client has to send Hello. Default 10 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub hello_timeout: Duration,
    /// Interval of the gateway's Ping frames. Default 15 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub heartbeat_interval: Duration,
    /// A connection that sends nothing for this long is closed with 4009. Default 45 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub idle_timeout: Duration,
    /// How long publishes may wait for Kafka. Default 10 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub publish_timeout: Duration,
    /// How long an idempotency key is remembered. Default 10 minutes.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub dedup_window: Duration,
    /// Idempotency keys remembered per gateway. Default 100,000.
    pub dedup_capacity: usize,
    /// Records kept in memory per partition to serve resumes without reading Kafka.
    /// Default 16,384.
    pub replay_records: usize,
    /// Bytes kept in memory per partition for the same purpose. Default 8 MiB.
    pub replay_bytes: usize,
    /// History readers (Kafka consumers serving subscribers behind the replay buffer,
    /// each shared by the subscribers that resume from about where it reads) at once per
    /// gateway; more wait for a reader to end. Default 8: each is a librdkafka client
    /// with its own threads.
    pub max_catchup_readers: usize,
    /// Memory for the key index of each topic that keyed subscriptions read (shared by
    /// its partitions): which keys each block of 1,024 records holds, so that a
    /// subscription to one key, joining from `earliest` or resuming, reads only the
    /// blocks with its key. Default 64 MiB: 4 bytes per distinct key per block, about
    /// 16 M records of distinct keys (far more when keys repeat); when full, the oldest
    /// blocks go and cursors before them are read through. 0 turns the index off.
    pub key_index_bytes: usize,
    /// How far back from the log end the key index of a partition is built when a keyed
    /// subscription first asks for it (then it follows the live reader). Default
    /// 16,777,216 records; older cursors are read through up to there.
    pub key_index_records: u64,
    /// Time given to in-flight publishes at shutdown. Default 10 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub drain_timeout: Duration,
    /// The most one read takes from a connection's socket. What the WebSocket parser has
    /// not yet asked for of it is kept only until it does, so an idle connection holds
    /// none of it (it held the whole buffer before: with 8 KiB an idle connection cost
    /// 18.1 KB, with 2 KiB 12.0 KB, bench/ `memory`); the parser's own buffer starts at
    /// 256 B and grows to the largest frame received. Default 2 KiB; reads of up to
    /// 16 KiB are made on the stack, larger ones in a buffer freed once parsed.
    pub read_buffer_bytes: usize,
    /// WebSocket write buffer per connection, and the largest frame the gateway writes:
    /// a larger Data message goes out in fragments of this size (at least 1 KiB), because
    /// the buffer keeps the capacity of the largest frame it ever held for the
    /// connection's life. Default 16 KiB: a connection that caught up on 256 KiB messages
    /// keeps about 16 KiB of it when idle, not 256 KiB (bench/ `deploy`).
    pub write_buffer_bytes: usize,
    /// Interval of Checkpoint frames for filtered subscriptions. Default 5 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub checkpoint_interval: Duration,
    /// The listener's accept queue. Default 4096: a reconnect storm of thousands of
    /// clients overflowed the usual 128, costing them 1 s and 3 s SYN retries (measured in
    /// bench/). The kernel caps it at `net.core.somaxconn`.
    pub accept_backlog: u32,
    /// Connections at once from one client address (the forwarded one behind a trusted
    /// proxy). Default 256. More: HTTP 503 before the upgrade.
    pub max_connections_per_address: usize,
    /// Connections at once of one authenticated principal. Default 64. More: the new
    /// session is refused with `RESOURCE_EXHAUSTED` and close 4013.
    pub max_connections_per_principal: usize,
    /// TCP connections still in their TLS or HTTP handshake at once. Default 1024. More
    /// are closed at once, before reading a byte: a flood of half-open handshakes cannot
    /// starve the connections already served.
    pub max_pending_handshakes: usize,
    /// TCP connections still in their handshake at once from one peer address. Default
    /// 64: one address's slowloris cannot take the gateway-wide pool from others. Trusted
    /// proxies ([`GatewayConfig::trusted_proxies`]) carry many clients and have no share,
    /// only the pool.
    pub max_pending_handshakes_per_address: usize,
    /// Time a new TCP connection has for its TLS handshake and its WebSocket upgrade
    /// request (headers included). Default 5 s.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub handshake_timeout: Duration,
    /// Time an [`Authenticator`](crate::Authenticator) has for a token. Default 5 s;
    /// when it is up the token is refused (`UNAVAILABLE`, close 4001).
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub auth_timeout: Duration,
    /// Sustained publishes per second of one principal, over all its connections and its
    /// gRPC calls (anonymous clients: per client address). Default 2000, burst the same.
    pub max_publishes_per_second_per_principal: u32,
    /// Record bytes queued for all connections together before subscriptions pause (each
    /// connection may still hold one record). Default 512 MiB.
    pub send_queue_bytes_total: usize,
    /// Time a Schema Registry call may take: registering a stream's schema, waiting for
    /// another publish's registration included (the publish that needs it then fails with
    /// `UNAVAILABLE`), the look-ups and compatibility checks at start (lookup-only and
    /// use-latest modes; the gateway then refuses to start), fetching a schema by id for a
    /// stream of several record types (the subscription then ends with `UNAVAILABLE`), the
    /// readiness probe. Default 5 s. Publishes whose schema id is known never wait on the
    /// registry.
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub registry_timeout: Duration,
    /// Principals and addresses tracked for the per-principal and per-address limits.
    /// Default 100,000; idle entries are dropped first.
    pub max_tracked_clients: usize,
    /// How often a background task checks Kafka (a metadata request) and the Schema
    /// Registry for `/readyz`. Probes read the last result and never make a request of
    /// their own, so any number of them costs Kafka nothing. Default 5 s: `/readyz` turns
    /// 503 at most `readiness_interval + readiness_timeout` (8 s) after Kafka stops
    /// answering, and 200 at the first check that succeeds after it is back. Must be above
    /// zero (checked when the gateway binds).
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub readiness_interval: Duration,
    /// Time one readiness check may take (Kafka and the registry are checked at once);
    /// longer counts as a failure. Default 3 s: above the 2 s after which Kafka's metadata
    /// request gives up by itself, so that what librdkafka reported (a refused password,
    /// an untrusted certificate) is what `/readyz` says. The registry's check is also
    /// bounded by [`Limits::registry_timeout`].
    #[cfg_attr(feature = "config", serde(with = "humantime_serde"), schemars(with = "String"))]
    pub readiness_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_message_bytes: 1 << 20,
            max_connections: 10_000,
            max_subscriptions: 64,
            max_publishes_per_second: 1000,
            max_inflight_publishes: 256,
            default_credit: 1000,
            max_credit: 100_000,
            send_queue_bytes: 1 << 20,
            send_queue_frames: 1024,
            slow_consumer_timeout: Duration::from_secs(30),
            close_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            heartbeat_interval: Duration::from_secs(15),
            idle_timeout: Duration::from_secs(45),
            publish_timeout: Duration::from_secs(10),
            dedup_window: Duration::from_secs(600),
            dedup_capacity: 100_000,
            replay_records: 16_384,
            replay_bytes: 8 << 20,
            max_catchup_readers: 8,
            key_index_bytes: 64 << 20,
            key_index_records: 1 << 24,
            drain_timeout: Duration::from_secs(10),
            read_buffer_bytes: 2 << 10,
            write_buffer_bytes: 16 << 10,
            checkpoint_interval: Duration::from_secs(5),
            accept_backlog: 4096,
            max_connections_per_address: 256,
            max_connections_per_principal: 64,
            max_pending_handshakes: 1024,
            max_pending_handshakes_per_address: 64,
            handshake_timeout: Duration::from_secs(5),
            auth_timeout: Duration::from_secs(5),
            max_publishes_per_second_per_principal: 2000,
            send_queue_bytes_total: 512 << 20,
            registry_timeout: Duration::from_secs(5),
            max_tracked_clients: 100_000,
            readiness_interval: Duration::from_secs(5),
            readiness_timeout: Duration::from_secs(3),
        }
    }
}

macro_rules! setters {
    ($($(#[$doc:meta])* $name:ident: $field:ident: $ty:ty;)*) => {
        impl Limits {
            $($(#[$doc])* pub fn $name(mut self, value: $ty) -> Limits {
                self.$field = value;
                self
            })*
        }
    };
}

setters! {
    /// Sets [`Limits::max_message_bytes`].
    with_max_message_bytes: max_message_bytes: usize;
    /// Sets [`Limits::max_connections`].
    with_max_connections: max_connections: usize;
    /// Sets [`Limits::max_subscriptions`].
    with_max_subscriptions: max_subscriptions: usize;
    /// Sets [`Limits::max_publishes_per_second`].
    with_max_publishes_per_second: max_publishes_per_second: u32;
    /// Sets [`Limits::max_inflight_publishes`].
    with_max_inflight_publishes: max_inflight_publishes: usize;
    /// Sets [`Limits::default_credit`].
    with_default_credit: default_credit: u32;
    /// Sets [`Limits::max_credit`].
    with_max_credit: max_credit: u32;
    /// Sets [`Limits::send_queue_bytes`].
    with_send_queue_bytes: send_queue_bytes: usize;
    /// Sets [`Limits::send_queue_frames`].
    with_send_queue_frames: send_queue_frames: usize;
    /// Sets [`Limits::slow_consumer_timeout`].
    with_slow_consumer_timeout: slow_consumer_timeout: Duration;
    /// Sets [`Limits::close_timeout`].
    with_close_timeout: close_timeout: Duration;
    /// Sets [`Limits::hello_timeout`].
    with_hello_timeout: hello_timeout: Duration;
    /// Sets [`Limits::heartbeat_interval`].
    with_heartbeat_interval: heartbeat_interval: Duration;
    /// Sets [`Limits::idle_timeout`].
    with_idle_timeout: idle_timeout: Duration;
    /// Sets [`Limits::publish_timeout`].
    with_publish_timeout: publish_timeout: Duration;
    /// Sets [`Limits::dedup_window`].
    with_dedup_window: dedup_window: Duration;
    /// Sets [`Limits::dedup_capacity`].
    with_dedup_capacity: dedup_capacity: usize;
    /// Sets [`Limits::replay_records`].
    with_replay_records: replay_records: usize;
    /// Sets [`Limits::replay_bytes`].
    with_replay_bytes: replay_bytes: usize;
    /// Sets [`Limits::max_catchup_readers`].
    with_max_catchup_readers: max_catchup_readers: usize;
    /// Sets [`Limits::key_index_bytes`].
    with_key_index_bytes: key_index_bytes: usize;
    /// Sets [`Limits::key_index_records`].
    with_key_index_records: key_index_records: u64;
    /// Sets [`Limits::drain_timeout`].
    with_drain_timeout: drain_timeout: Duration;
    /// Sets [`Limits::checkpoint_interval`].
    with_checkpoint_interval: checkpoint_interval: Duration;
    /// Sets [`Limits::accept_backlog`].
    with_accept_backlog: accept_backlog: u32;
    /// Sets [`Limits::max_connections_per_address`].
    with_max_connections_per_address: max_connections_per_address: usize;
    /// Sets [`Limits::max_connections_per_principal`].
    with_max_connections_per_principal: max_connections_per_principal: usize;
    /// Sets [`Limits::max_pending_handshakes`].
    with_max_pending_handshakes: max_pending_handshakes: usize;
    /// Sets [`Limits::max_pending_handshakes_per_address`].
    with_max_pending_handshakes_per_address: max_pending_handshakes_per_address: usize;
    /// Sets [`Limits::handshake_timeout`].
    with_handshake_timeout: handshake_timeout: Duration;
    /// Sets [`Limits::auth_timeout`].
    with_auth_timeout: auth_timeout: Duration;
    /// Sets [`Limits::max_publishes_per_second_per_principal`].
    with_max_publishes_per_second_per_principal: max_publishes_per_second_per_principal: u32;
    /// Sets [`Limits::send_queue_bytes_total`].
    with_send_queue_bytes_total: send_queue_bytes_total: usize;
    /// Sets [`Limits::registry_timeout`].
    with_registry_timeout: registry_timeout: Duration;
    /// Sets [`Limits::max_tracked_clients`].
    with_max_tracked_clients: max_tracked_clients: usize;
    /// Sets [`Limits::readiness_interval`].
    with_readiness_interval: readiness_interval: Duration;
    /// Sets [`Limits::readiness_timeout`].
    with_readiness_timeout: readiness_timeout: Duration;
}

/// TLS for `wss://`: a PEM certificate chain and its PEM private key.
#[derive(Debug, Clone)]
pub struct TlsConfig {
    pub(crate) cert_chain: PathBuf,
    pub(crate) private_key: PathBuf,
}

impl TlsConfig {
    /// Reads the chain and key from these PEM files when the gateway binds.
    pub fn from_pem_files(cert_chain: impl Into<PathBuf>, private_key: impl Into<PathBuf>) -> Self {
        TlsConfig { cert_chain: cert_chain.into(), private_key: private_key.into() }
    }
}

/// Everything a [`Gateway`](crate::Gateway) needs besides its streams.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// WebSocket listener. Default `127.0.0.1:8080`; not bound at all by a gateway built
    /// with [`GatewayBuilder::without_listener`](crate::GatewayBuilder::without_listener).
    pub listen: SocketAddr,
    /// TLS for the listener (`wss://`). Default none (`ws://`).
    pub tls: Option<TlsConfig>,
    /// HTTP listener for `/metrics`, `/livez` (liveness: the process serves) and `/readyz`
    /// (readiness: Kafka and the Schema Registry answer, and the gateway is not shutting
    /// down). Default none. An embedding server can serve the same answers itself
    /// ([`GatewayService::admin_response`](crate::GatewayService::admin_response)).
    pub metrics_listen: Option<SocketAddr>,
    /// Kafka.
    pub kafka: KafkaConfig,
    /// Limits.
    pub limits: Limits,
    /// Identifies this process in Welcome and logs. Default a random id.
    pub server_id: String,
    /// A Confluent-compatible Schema Registry. Default none: a gateway serving a stream
    /// declared with a schema, or one of several record types, then refuses to start.
    pub schema_registry: Option<RegistryConfig>,
    /// Which web pages may open sessions, and under which `Host`. Default: no browser page
    /// at all (clients that send no `Origin`, which browsers always send, are let in).
    pub origins: OriginPolicy,
    /// Proxies (addresses or CIDR blocks, e.g. `10.0.0.0/8`) whose `X-Forwarded-For` is
    /// believed: behind them the client address (per-address limits, [`Handshake::client_ip`](crate::Handshake::client_ip))
    /// is the forwarded one. Default none: the TCP peer is the client.
    pub trusted_proxies: Vec<String>,
    /// Exactly-once publishes across the nodes of a cluster ([`GatewayConfig::cluster`]).
    /// Default none: dedup is per node.
    pub cluster: Option<ClusterConfig>,
    /// A compacted topic through which nodes share their key indexes
    /// ([`GatewayConfig::key_index_topic`]). Default none: each node builds its own.
    pub key_index_topic: Option<String>,
}

/// Which web pages may open WebSocket sessions (the `Origin` header a browser sends) and,
/// against DNS rebinding, under which `Host` names. Checked before the upgrade; a refusal
/// is HTTP 403.
///
/// Origins match exactly: scheme, host and port, in the form browsers send
/// (`https://chat.example.com`, `http://127.0.0.1:8080`; default ports left out, host in
/// lower case, international names in punycode — configured names are normalized to that
/// form, so `https://Bücher.example:443` may be configured). `null` never matches.
///
/// ```
/// use kafkasocks::OriginPolicy;
/// let origins = OriginPolicy::new().allow("https://chat.example.com").allow("http://localhost:8080");
/// ```
#[derive(Debug, Clone, Default)]
pub struct OriginPolicy {
    pub(crate) allowed: Vec<String>,
    pub(crate) any: bool,
    pub(crate) refuse_missing: bool,
    pub(crate) hosts: Vec<String>,
}

impl OriginPolicy {
    /// No browser page may connect; clients without an `Origin` (not browsers) may.
    pub fn new() -> OriginPolicy {
        OriginPolicy::default()
    }

    /// Lets pages of this origin connect (checked when the gateway binds).
    pub fn allow(mut self, origin: impl Into<String>) -> OriginPolicy {
        self.allowed.push(origin.into());
        self
    }

    /// Lets pages of any origin connect: any web site its users visit can then use their
    /// sessions' credentials if those are ambient (cookies). Logged as a warning at start.
    pub fn allow_any(mut self) -> OriginPolicy {
        self.any = true;
        self
    }

    /// Refuses clients that send no `Origin` (only browsers may connect).
    pub fn refuse_missing(mut self) -> OriginPolicy {
        self.refuse_missing = true;
        self
    }

    /// Accepts upgrades only with one of these `Host` values (`host` or `host:port`; case
    /// ignored), against DNS rebinding. Default: any host.
    pub fn allow_host(mut self, host: impl Into<String>) -> OriginPolicy {
        self.hosts.push(host.into().to_ascii_lowercase());
        self
    }
}

impl GatewayConfig {
    /// A configuration with defaults and this Kafka.
    pub fn new(kafka: KafkaConfig) -> GatewayConfig {
        GatewayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls: None,
            metrics_listen: None,
            kafka,
            limits: Limits::default(),
            server_id: format!("gw-{:016x}", rand::random::<u64>()),
            schema_registry: None,
            origins: OriginPolicy::new(),
            trusted_proxies: Vec::new(),
            cluster: None,
            key_index_topic: None,
        }
    }

    /// Makes this node one of a cluster of gateway nodes with exactly-once publishes
    /// across them: a publish retried with the same idempotency key on any node of the
    /// cluster is produced once (docs/design.md, "Exactly-once publish across nodes").
    /// Without it, the dedup window is this node's own.
    pub fn cluster(mut self, cluster: ClusterConfig) -> GatewayConfig {
        self.cluster = Some(cluster);
        self
    }

    /// Shares the key index (which keys each block of 1,024 offsets holds, so that a
    /// subscription to one key reads only the blocks with it: docs/design.md) through this
    /// compacted topic, created when missing: a restarted node, or another node of the
    /// deployment, then has the index without reading the partitions again. Every node of
    /// a deployment may use the same topic. Only the gateways may write to it (Kafka ACLs):
    /// a forged block would make subscriptions to a key skip its records.
    pub fn key_index_topic(mut self, topic: impl Into<String>) -> GatewayConfig {
        self.key_index_topic = Some(topic.into());
        self
    }

    /// Sets which pages may connect.
    pub fn origins(mut self, origins: OriginPolicy) -> GatewayConfig {
        self.origins = origins;
        self
    }

    /// Believes `X-Forwarded-For` from these proxies (addresses or CIDR blocks).
    pub fn trusted_proxies<I, S>(mut self, proxies: I) -> GatewayConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.trusted_proxies = proxies.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the WebSocket listener address (port 0: any free port).
    pub fn listen(mut self, addr: SocketAddr) -> GatewayConfig {
        self.listen = addr;
        self
    }

    /// Serves `wss://` with this certificate.
    pub fn tls(mut self, tls: TlsConfig) -> GatewayConfig {
        self.tls = Some(tls);
        self
    }

    /// Serves `/metrics`, `/livez` (liveness) and `/readyz` (readiness: Kafka and the
    /// Schema Registry answer, not shutting down) on this address.
    pub fn metrics_listen(mut self, addr: SocketAddr) -> GatewayConfig {
        self.metrics_listen = Some(addr);
        self
    }

    /// Replaces the limits.
    pub fn limits(mut self, limits: Limits) -> GatewayConfig {
        self.limits = limits;
        self
    }

    /// Uses this Schema Registry for streams declared with a schema: a base URL such as
    /// `http://127.0.0.1:18081/apis/ccompat/v7`, or a [`RegistryConfig`] with a mode and
    /// credentials.
    pub fn schema_registry(mut self, registry: impl Into<RegistryConfig>) -> GatewayConfig {
        self.schema_registry = Some(registry.into());
        self
    }

    /// Sets the server id.
    pub fn server_id(mut self, id: impl Into<String>) -> GatewayConfig {
        self.server_id = id.into();
        self
    }
}
