//! The top layer: it builds the layers below into a [`Gateway`] and serves it.
//!
//! - [`listener`]: the gateway's own WebSocket listener (`ws://`, or `wss://` with rustls)
//!   and its handshake bounds;
//! - [`service`]: [`GatewayService`], what any server needs to serve the gateway: the
//!   checks on an upgrade request (the Origin and Host rules of [`door`], shutdown, the
//!   connection limits, the subprotocol) giving an [`Admission`] or a [`Refusal`], the
//!   session on an upgraded connection, the admin answers; the listener uses it too;
//! - [`reads`]: socket reads that hold a buffer only while bytes wait to be parsed, and
//!   the WebSocket settings that go with them;
//! - [`admin`]: `/metrics`, `/livez`, `/readyz` and their own listener, with readiness
//!   cached by [`readiness`];
//! - [`sessions`]: the sessions a graceful shutdown waits for, embedded ones included;
//! - `axum` (feature `axum`): routes for an axum router.
//!
//! [`Gateway::run`] runs the background work (the readiness checks, the admin listener,
//! the accept loop when there is a listener) until shutdown, then drains.

mod admin;
mod admission;
#[cfg(feature = "axum")]
pub mod axum;
mod door;
#[cfg(feature = "conformance-echo")]
mod echo;
mod listener;
mod readiness;
mod reads;
mod service;
mod sessions;
mod shares;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::auth::{AllowAnonymous, Authenticator, Permissions};
use crate::config::{GatewayConfig, TlsConfig};
use crate::error::Error;
use crate::fanout::context::FanoutContext;
use crate::fanout::hubs::Hubs;
use crate::fanout::outbox::SendBudget;
use crate::kafka::Kafka;
use crate::metrics::Metrics;
use crate::session::clients::Clients;
use crate::session::dedup::DedupWindow;
use crate::session::local::LocalStreams;
use crate::session::shared::Shared;
use crate::stream::Streams;
pub use admission::{Admission, Refusal};
use door::Door;
use listener::{Listener, TlsAcceptor};
use readiness::Readiness;
use service::Front;
pub use service::GatewayService;
use sessions::Sessions;

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    config: GatewayConfig,
    streams: Streams,
    auth: Option<Arc<dyn Authenticator>>,
    anonymous: bool,
    permissions: Permissions,
    metrics: Arc<Metrics>,
    echo_path: Option<String>,
    listener: bool,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("config", &self.config)
            .field("streams", &self.streams)
            .field("listener", &self.listener)
            .finish_non_exhaustive()
    }
}

impl GatewayBuilder {
    /// Serves these streams (added to any given before).
    pub fn streams(mut self, streams: Streams) -> GatewayBuilder {
        self.streams = std::mem::take(&mut self.streams).merge(streams);
        self
    }

    /// Authenticates tokens with `auth` (for example a [`JwtAuthenticator`](crate::JwtAuthenticator)).
    /// A gateway needs one, or [`GatewayBuilder::allow_anonymous`].
    pub fn authenticator(mut self, auth: impl Authenticator) -> GatewayBuilder {
        self.auth = Some(Arc::new(auth));
        self
    }

    /// Lets anyone in, without a token, as the anonymous principal: for a laptop, or a
    /// gateway that only serves public data. Opened on purpose, and logged as a warning
    /// at start. Without it (or an authenticator), [`GatewayBuilder::bind`] fails.
    pub fn allow_anonymous(mut self) -> GatewayBuilder {
        self.anonymous = true;
        self
    }

    /// What principals may do on which streams, and with which keys. Default
    /// [`Permissions::allow_all`]: every principal the authenticator accepts, every stream.
    pub fn permissions(mut self, permissions: Permissions) -> GatewayBuilder {
        self.permissions = permissions;
        self
    }

    /// Test-only: WebSocket upgrades to `path` (no subprotocol needed) are served by an
    /// echo loop, through the same listener, TLS, handshake checks and WebSocket limits as
    /// sessions. For conformance suites (Autobahn); never in production.
    #[cfg(feature = "conformance-echo")]
    pub fn echo_for_conformance(mut self, path: &str) -> GatewayBuilder {
        self.echo_path = Some(path.to_owned());
        self
    }

    /// Appends text to every `/metrics` scrape, after the gateway's own metrics: your
    /// application's metrics on the same endpoint. `encode` writes OpenMetrics text, for
    /// example with `prometheus_client::encoding::text::encode_registry(out, &registry)`
    /// for a `prometheus-client` registry of your own (without its `# EOF`, which the
    /// gateway writes last).
    pub fn metrics_extension(self, encode: impl Fn(&mut String) -> std::fmt::Result + Send + Sync + 'static) -> Self {
        self.metrics.add_extension(Box::new(encode));
        self
    }

    /// Binds no WebSocket listener of its own ([`GatewayConfig::listen`] is not used): the
    /// gateway is served by another HTTP server through [`Gateway::service`] (for example
    /// the `axum` feature's routes). [`Gateway::run`] then runs the background work and,
    /// at shutdown, drains those sessions. TLS is the embedding server's: with
    /// [`GatewayConfig::tls`] set, [`GatewayBuilder::bind`] fails. Default: a listener.
    pub fn without_listener(mut self) -> GatewayBuilder {
        self.listener = false;
        self
    }

    /// Binds the listeners and connects the Kafka clients. Kafka need not be reachable
    /// yet: requests fail with `UNAVAILABLE` until it is.
    pub async fn bind(self) -> Result<Gateway, Error> {
        let GatewayBuilder { config, streams, auth, anonymous, permissions, metrics, echo_path, listener } = self;
        if streams.is_empty() {
            return Err(Error::Config("a gateway needs at least one stream".into()));
        }
        let limits = &config.limits;
        if limits.max_inflight_publishes + crate::fanout::outbox::RESERVED_FRAMES > limits.send_queue_frames {
            return Err(Error::Config(format!(
                "max_inflight_publishes ({}) must leave room in send_queue_frames ({}) for {} more frames: the \
                 receipt of every publish in flight must fit a connection's control queue",
                limits.max_inflight_publishes,
                limits.send_queue_frames,
                crate::fanout::outbox::RESERVED_FRAMES
            )));
        }
        if limits.readiness_interval.is_zero() {
            return Err(Error::Config("readiness_interval must be above zero".into()));
        }
        let auth: Arc<dyn Authenticator> = match (auth, anonymous) {
            (Some(a), _) => a,
            (None, true) => Arc::new(AllowAnonymous),
            (None, false) => {
                return Err(Error::Config(
                    "no authenticator: give one (GatewayBuilder::authenticator, e.g. a JwtAuthenticator), \
                     or let anyone in on purpose with GatewayBuilder::allow_anonymous"
                        .into(),
                ));
            }
        };
        let door = Door::new(&config)?;
        if !listener && config.tls.is_some() {
            return Err(Error::Config(
                "TLS is configured for a gateway without a listener of its own: the server it is embedded in \
                 terminates TLS"
                    .into(),
            ));
        }
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let tcp = if listener { Some(listener::listen(config.listen, config.limits.accept_backlog)?) } else { None };
        let metrics_listener = match config.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|source| Error::Bind { addr, source })?),
            None => None,
        };
        #[cfg(feature = "registry")]
        let registry =
            registry_client(config.schema_registry.as_ref(), config.limits.registry_timeout, &streams).await?;
        let kafka = Kafka::new(config.kafka.clone(), config.limits.publish_timeout, &config.server_id)?;
        kafka.set_framed_keys(streams.framed_key_topics().map_err(Error::Config)?);
        if let Some(cluster) = &config.cluster {
            kafka
                .join_cluster(cluster, &config.server_id, config.limits.dedup_window, config.limits.dedup_capacity)
                .await?;
        }
        if let Some(topic) = &config.key_index_topic {
            kafka.share_key_index(topic).await?;
        }
        let hubs = Hubs::new(FanoutContext::new(kafka, config.limits.clone(), metrics.clone()));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            hubs,
            streams,
            auth,
            permissions,
            clients: Clients::new(config.limits.clone()),
            send_budget: SendBudget::new(config.limits.send_queue_bytes_total),
            dedup: DedupWindow::new(config.limits.dedup_window, config.limits.dedup_capacity),
            #[cfg(feature = "registry")]
            registry,
            limits: config.limits.clone(),
            metrics,
            server_id: config.server_id.clone(),
            shutdown: shutdown_rx,
        });
        #[cfg(not(feature = "registry"))]
        if let Some(method) = shared.streams.with_record_types().chain(shared.streams.with_schema()).next() {
            return Err(Error::Config(format!(
                "stream {method} needs the Schema Registry, but kafkasocks was built without `registry`"
            )));
        }
        #[cfg(not(feature = "registry"))]
        if config.schema_registry.is_some() {
            return Err(Error::Config(
                "a schema registry is configured but kafkasocks was built without `registry`".into(),
            ));
        }
        // The first check starts now, so that a probe finds its answer within the timeout.
        let limits = &config.limits;
        let (readiness, report) = Readiness::new(limits.readiness_timeout.saturating_add(Duration::from_millis(100)));
        let refresh = AbortOnDrop(tokio::spawn(readiness::refresh(
            {
                let shared = shared.clone();
                let timeout = limits.readiness_timeout;
                move || {
                    let shared = shared.clone();
                    async move { readiness::check(&shared, timeout).await }
                }
            },
            limits.readiness_interval,
            report,
        )));
        let service = GatewayService::new(Front { door, shared, echo_path, sessions: Sessions::new(), readiness });
        let listener = tcp.map(|tcp| Listener::new(tcp, tls, service.clone(), limits));
        Ok(Gateway { listener, metrics_listener, service, anonymous, shutdown_tx, refresh })
    }
}

/// The registry client, with what its mode requires done: in lookup-only and use-latest
/// modes every publish stream's schema is found now, or the gateway does not start.
#[cfg(feature = "registry")]
async fn registry_client(
    config: Option<&crate::registry::RegistryConfig>,
    timeout: Duration,
    streams: &Streams,
) -> Result<Option<Arc<crate::registry::SchemaRegistry>>, Error> {
    let Some(config) = config else {
        if let Some(method) = streams.with_record_types().next() {
            return Err(Error::Config(format!(
                "stream {method} has several record types, which needs a schema registry to name them; configure one"
            )));
        }
        if let Some(method) = streams.with_schema().next() {
            return Err(Error::Config(format!(
                "stream {method} writes with a Schema Registry schema, but no schema registry is configured"
            )));
        }
        return Ok(None);
    };
    // The registry client (reqwest) uses rustls without a built-in provider: ring is the
    // one this crate compiles. Another one already installed is fine too.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let registry = crate::registry::SchemaRegistry::new(config, timeout)?;
    registry.prepare(streams.publish_schemas().into_iter()).await?;
    Ok(Some(Arc::new(registry)))
}

#[cfg(feature = "tls")]
fn tls_acceptor(tls: &TlsConfig) -> Result<TlsAcceptor, Error> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert_chain)
        .and_then(|i| i.collect::<Result<Vec<_>, _>>())
        .map_err(|e| Error::tls_file(&tls.cert_chain, e))?;
    let key = PrivateKeyDer::from_pem_file(&tls.private_key).map_err(|e| Error::tls_file(&tls.private_key, e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::tls("choosing TLS versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::tls("using the certificate and key", e))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(not(feature = "tls"))]
fn tls_acceptor(_tls: &TlsConfig) -> Result<TlsAcceptor, Error> {
    Err(Error::Config("wss:// needs the `tls` feature of kafkasocks".into()))
}

/// A running gateway. See the crate docs for an example, and [`GatewayService`] for
/// serving it from another HTTP server.
pub struct Gateway {
    listener: Option<Listener>,
    metrics_listener: Option<TcpListener>,
    service: GatewayService,
    anonymous: bool,
    shutdown_tx: watch::Sender<bool>,
    /// The readiness checks, stopped when the gateway is.
    refresh: AbortOnDrop,
}

/// A task that ends with its owner.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listener.as_ref().and_then(Listener::local_addr))
            .field("server_id", &self.server_id())
            .finish_non_exhaustive()
    }
}

/// Stops a running [`Gateway`]: GoAway to every client, then close 1001 once their
/// in-flight publishes are answered (at most the drain timeout).
#[derive(Debug, Clone)]
pub struct ShutdownHandle(watch::Sender<bool>);

impl ShutdownHandle {
    /// Begins the shutdown. [`Gateway::run`] returns once it is done.
    pub fn shutdown(&self) {
        let _ = self.0.send(true);
    }
}

impl Gateway {
    /// Starts configuring a gateway.
    pub fn builder(config: GatewayConfig) -> GatewayBuilder {
        GatewayBuilder {
            config,
            streams: Streams::new(),
            auth: None,
            anonymous: false,
            permissions: Permissions::allow_all(),
            metrics: Arc::new(Metrics::new()),
            echo_path: None,
            listener: true,
        }
    }

    /// The WebSocket listener's address (useful with port 0); `0.0.0.0:0` for a gateway
    /// without a listener ([`GatewayBuilder::without_listener`]).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.as_ref().and_then(Listener::local_addr).unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The metrics listener's address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The gateway id sent in Welcome.
    pub fn server_id(&self) -> &str {
        &self.shared().server_id
    }

    /// The gateway's streams in process (for gRPC services and tests), sharing its
    /// Kafka readers.
    pub fn local_streams(&self) -> LocalStreams {
        LocalStreams { shared: self.shared().clone() }
    }

    /// The gateway as a service for another HTTP server: WebSocket upgrades it accepted,
    /// and the admin answers. Keep [`Gateway::run`] running beside it.
    pub fn service(&self) -> GatewayService {
        self.service.clone()
    }

    /// A handle that stops [`Gateway::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown_tx.clone())
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.service.front().shared
    }

    /// Serves until the shutdown handle is used, then drains: the readiness checks, the
    /// admin listener, and the accept loop (without a listener, it only waits for the
    /// shutdown); at shutdown every session, embedded ones included, gets GoAway and is
    /// awaited for its grace period.
    pub async fn run(self) -> Result<(), Error> {
        let Gateway { listener, metrics_listener, service, anonymous, shutdown_tx, refresh } = self;
        let shared = service.front().shared.clone();
        match &listener {
            Some(l) => {
                tracing::info!(addr = ?l.local_addr(), tls = l.tls(), server_id = %shared.server_id, "gateway listening")
            }
            None => {
                tracing::info!(server_id = %shared.server_id, "gateway serving through an embedding server (no listener)")
            }
        }
        if anonymous {
            tracing::warn!(
                "anonymous access is ON: anyone who can reach this port may use every stream (allow_anonymous)"
            );
        }
        if listener.as_ref().is_some_and(|l| !l.tls() && !l.local_addr().is_some_and(|a| a.ip().is_loopback())) {
            tracing::warn!("serving ws:// (no TLS) beyond loopback: tokens cross the network in clear text");
        }
        service.front().door.log();
        if service.front().echo_path.is_some() {
            tracing::warn!("the conformance echo endpoint is ON (test-only)");
        }
        if let Some(l) = metrics_listener {
            let readiness = service.front().readiness.clone();
            tokio::spawn(admin::serve(l, shared.clone(), readiness, shutdown_tx.subscribe()));
        }
        let conns = match listener {
            Some(l) => l.serve(shutdown_tx.subscribe()).await,
            None => {
                let mut shutdown = shutdown_tx.subscribe();
                // The sender lives in this function: waiting cannot fail.
                let _ = shutdown.wait_for(|down| *down).await;
                JoinSet::new()
            }
        };
        drain(conns, service.front()).await;
        shared.hubs.retire_all();
        drop(refresh);
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// Waits for the listener's connections and every session (embedded ones included) to
/// end: the drain, then each connection's Close (written for up to close_timeout to a peer
/// that does not read) and the peer's answer (read for at most 10 s). What is left then is
/// aborted.
async fn drain(mut conns: JoinSet<()>, front: &Front) {
    let limits = &front.shared.limits;
    let grace = limits.drain_timeout + limits.close_timeout + Duration::from_secs(10);
    let all = async {
        while conns.join_next().await.is_some() {}
        front.sessions.closed().await;
    };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(sessions = front.sessions.open(), "the drain's grace period is over: aborting what is left");
        conns.abort_all();
        front.sessions.abort();
        // An aborted session ends at its next poll; one whose embedding server no longer
        // polls it is not waited for.
        let _ = tokio::time::timeout(Duration::from_secs(1), front.sessions.closed()).await;
    }
}
