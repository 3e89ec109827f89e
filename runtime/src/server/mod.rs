//! The top layer: the gateway's WebSocket listener (`ws://`, or `wss://` with rustls), the
//! handshake (a bound on handshakes in progress and their time, the Origin and Host checks
//! of [`door`], the connection limits, the subprotocol), the admin endpoint ([`admin`]),
//! and graceful shutdown. It builds the layers below and hands each upgraded socket to a
//! session.

mod admin;
mod door;
#[cfg(feature = "conformance-echo")]
mod echo;
mod shares;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
#[cfg(feature = "tls")]
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::{HeaderValue, StatusCode, header};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::auth::{AllowAnonymous, Authenticator, Handshake, Permissions, Transport};
use crate::config::{GatewayConfig, Limits, TlsConfig};
use crate::error::Error;
use crate::fanout::context::FanoutContext;
use crate::fanout::hubs::Hubs;
use crate::fanout::outbox::SendBudget;
use crate::kafka::Kafka;
use crate::metrics::Metrics;
use crate::protocol::SUBPROTOCOL;
use crate::session::clients::{Clients, Full, Slot};
use crate::session::connection;
use crate::session::dedup::DedupWindow;
use crate::session::local::LocalStreams;
use crate::session::shared::Shared;
use crate::stream::Streams;
use door::Door;
use shares::{Share, Shares};

#[cfg(not(feature = "tls"))]
#[derive(Clone)]
enum TlsAcceptor {}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    config: GatewayConfig,
    streams: Streams,
    auth: Option<Arc<dyn Authenticator>>,
    anonymous: bool,
    permissions: Permissions,
    metrics: Arc<Metrics>,
    echo_path: Option<String>,
}

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("config", &self.config)
            .field("streams", &self.streams)
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

    /// Binds the listeners and connects the Kafka clients. Kafka need not be reachable
    /// yet: requests fail with `UNAVAILABLE` until it is.
    pub async fn bind(self) -> Result<Gateway, Error> {
        let GatewayBuilder { config, streams, auth, anonymous, permissions, metrics, echo_path } = self;
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
        let tls = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let listener = listen(config.listen, config.limits.accept_backlog)?;
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
        let pending = Arc::new(Semaphore::new(config.limits.max_pending_handshakes));
        let front = Arc::new(Front {
            door,
            tls,
            shared: shared.clone(),
            echo_path,
            anonymous,
            pending,
            pending_shares: Shares::new(config.limits.max_pending_handshakes_per_address),
        });
        Ok(Gateway { listener, metrics_listener, front, shared, shutdown_tx })
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

fn listen(addr: SocketAddr, backlog: u32) -> Result<TcpListener, Error> {
    let bind = || {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    bind().map_err(|source| Error::Bind { addr, source })
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

/// What the listener needs for each new connection.
struct Front {
    door: Door,
    tls: Option<TlsAcceptor>,
    shared: Arc<Shared>,
    echo_path: Option<String>,
    anonymous: bool,
    /// Permits for connections still in their TLS or HTTP handshake.
    pending: Arc<Semaphore>,
    /// Each peer address's share of them.
    pending_shares: Arc<Shares>,
}

/// A connection's place among the handshakes in progress (and its address's share, unless
/// it is a trusted proxy); given back when dropped.
struct Pending {
    _share: Option<Share>,
    _permit: OwnedSemaphorePermit,
}

impl Front {
    /// A place for a new handshake from `ip`, unless the pool or that address's share of it
    /// is full. A trusted proxy carries many clients: it has no share, only the pool.
    fn pending(&self, ip: IpAddr) -> Option<Pending> {
        let permit = self.pending.clone().try_acquire_owned().ok()?;
        let share = if self.door.trusted(ip) { None } else { Some(self.pending_shares.take(ip)?) };
        Some(Pending { _share: share, _permit: permit })
    }
}

/// A running gateway. See the crate docs for an example.
pub struct Gateway {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    front: Arc<Front>,
    shared: Arc<Shared>,
    shutdown_tx: watch::Sender<bool>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("listen", &self.listener.local_addr().ok())
            .field("server_id", &self.shared.server_id)
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
        }
    }

    /// The WebSocket listener's address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)))
    }

    /// The metrics listener's address, if any.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The gateway id sent in Welcome.
    pub fn server_id(&self) -> &str {
        &self.shared.server_id
    }

    /// The gateway's streams in process (for gRPC services and tests), sharing its
    /// Kafka readers.
    pub fn local_streams(&self) -> LocalStreams {
        LocalStreams { shared: self.shared.clone() }
    }

    /// A handle that stops [`Gateway::run`].
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        ShutdownHandle(self.shutdown_tx.clone())
    }

    /// Serves until the shutdown handle is used, then drains.
    pub async fn run(self) -> Result<(), Error> {
        let Gateway { listener, metrics_listener, front, shared, shutdown_tx } = self;
        tracing::info!(addr = ?listener.local_addr().ok(), tls = front.tls.is_some(), server_id = %shared.server_id, "gateway listening");
        if front.anonymous {
            tracing::warn!(
                "anonymous access is ON: anyone who can reach this port may use every stream (allow_anonymous)"
            );
        }
        if front.tls.is_none() && !listener.local_addr().is_ok_and(|a| a.ip().is_loopback()) {
            tracing::warn!("serving ws:// (no TLS) beyond loopback: tokens cross the network in clear text");
        }
        front.door.log();
        if front.echo_path.is_some() {
            tracing::warn!("the conformance echo endpoint is ON (test-only)");
        }
        // Say at once when Kafka refuses this configuration (a wrong password, an untrusted
        // certificate), instead of only when the first request times out.
        let kafka = shared.kafka().clone();
        tokio::spawn(async move {
            match kafka.health().await {
                Ok(()) => tracing::info!("Kafka answers"),
                Err(why) => tracing::error!(
                    %why,
                    "Kafka is not usable with this configuration: publishes and subscriptions fail with UNAVAILABLE \
                     and /healthz says why, until it is"
                ),
            }
        });
        let mut shutdown = shutdown_tx.subscribe();
        if let Some(l) = metrics_listener {
            tokio::spawn(admin::serve(l, shared.clone(), shutdown_tx.subscribe()));
        }
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok((tcp, remote)) => match front.pending(remote.ip()) {
                        Some(permit) => {
                            let _ = tcp.set_nodelay(true);
                            conns.spawn(accept(tcp, remote, permit, front.clone()));
                        }
                        // Too many handshakes in progress: close at once, read nothing.
                        None => {
                            shared.metrics.connection_rejected("handshakes");
                            drop(tcp);
                        }
                    },
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
                _ = shutdown.changed() => break,
            }
        }
        drop(listener);
        // Drain, then each connection's Close (written for up to close_timeout to a peer
        // that does not read) and the peer's answer (read for at most 10 s).
        let grace = shared.limits.drain_timeout + shared.limits.close_timeout + Duration::from_secs(10);
        if tokio::time::timeout(grace, async { while conns.join_next().await.is_some() {} }).await.is_err() {
            conns.abort_all();
        }
        shared.hubs.retire_all();
        tracing::info!("gateway stopped");
        Ok(())
    }
}

/// One accepted connection, for its whole life. Each branch is boxed: a task's memory is
/// sized for the largest state of its future, and the TLS handshake's state (rustls, held
/// inline) would otherwise cost every connection, `ws://` included, about 9 KB for as long
/// as it lives (measured with heaptrack in bench/). The handshake (TLS and the upgrade
/// request) has [`Limits::handshake_timeout`] and holds one of the
/// [`Limits::max_pending_handshakes`] permits until it is done.
async fn accept(tcp: TcpStream, remote: SocketAddr, permit: Pending, front: Arc<Front>) {
    match front.tls.clone() {
        #[cfg(feature = "tls")]
        Some(acceptor) => {
            Box::pin(async move {
                let started = tokio::time::Instant::now();
                let timeout = front.shared.limits.handshake_timeout;
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => upgrade(stream, remote, permit, started + timeout, front).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            })
            .await
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match never {},
        None => {
            let deadline = tokio::time::Instant::now() + front.shared.limits.handshake_timeout;
            Box::pin(upgrade(tcp, remote, permit, deadline, front)).await
        }
    }
}

pub(crate) fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(limits.read_buffer_bytes)
        .write_buffer_size(limits.write_buffer_bytes)
        .max_write_buffer_size(limits.write_buffer_bytes + limits.send_queue_bytes + (1 << 20))
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

/// What the upgrade request decided.
enum Admitted {
    /// A session, with its handshake context and connection slot.
    Session(Handshake, Slot),
    /// The conformance echo.
    #[cfg(feature = "conformance-echo")]
    Echo(Slot),
}

fn refuse(status: StatusCode, body: String, retry_after: Option<u64>) -> ErrorResponse {
    let mut err = ErrorResponse::new(Some(body + "\n"));
    *err.status_mut() = status;
    if let Some(secs) = retry_after {
        err.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    err
}

/// The checks on the upgrade request, in order: Origin and Host (403), the gateway's
/// state and connection limits (503 with Retry-After), the subprotocol (400).
#[allow(clippy::result_large_err)]
fn admit(
    front: &Front,
    remote: SocketAddr,
    req: &Request,
    mut resp: Response,
) -> Result<(Response, Admitted), ErrorResponse> {
    let shared = &front.shared;
    let text = |name: header::HeaderName| req.headers().get(name).and_then(|v| v.to_str().ok());
    let origin = match req.headers().get(header::ORIGIN) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            shared.metrics.connection_rejected("origin");
            refuse(StatusCode::FORBIDDEN, "the Origin is not ASCII text".into(), None)
        })?),
    };
    if let Err(why) = front.door.check_origin(origin) {
        shared.metrics.connection_rejected("origin");
        tracing::debug!(%remote, %why, "refused");
        return Err(refuse(StatusCode::FORBIDDEN, why, None));
    }
    if let Err(why) = front.door.check_host(text(header::HOST)) {
        shared.metrics.connection_rejected("host");
        return Err(refuse(StatusCode::FORBIDDEN, why, None));
    }
    if shared.draining() {
        return Err(refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "gateway shutting down; reconnect elsewhere".into(),
            Some(1),
        ));
    }
    let forwarded = req.headers().get_all("x-forwarded-for").iter().filter_map(|v| v.to_str().ok());
    let client_ip = front.door.client_ip(remote.ip(), forwarded);
    let slot = shared.clients.connect(Some(client_ip)).map_err(|full| {
        shared.metrics.connection_rejected(match full {
            Full::Address => "address_limit",
            _ => "connection_limit",
        });
        let status = full.status(&shared.limits);
        refuse(StatusCode::SERVICE_UNAVAILABLE, status.message().to_owned(), Some(5))
    })?;
    #[cfg(feature = "conformance-echo")]
    if front.echo_path.as_deref() == Some(req.uri().path()) {
        return Ok((resp, Admitted::Echo(slot)));
    }
    let offered = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| p.trim() == SUBPROTOCOL);
    if !offered {
        return Err(refuse(StatusCode::BAD_REQUEST, format!("offer the WebSocket subprotocol {SUBPROTOCOL}"), None));
    }
    resp.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(SUBPROTOCOL));
    let headers = req.headers().iter().filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())));
    let handshake =
        Handshake::new(Transport::WebSocket, req.uri().path(), headers, Some(remote)).with_client_ip(client_ip);
    Ok((resp, Admitted::Session(handshake, slot)))
}

async fn upgrade<S>(stream: S, remote: SocketAddr, permit: Pending, deadline: tokio::time::Instant, front: Arc<Front>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let shared = front.shared.clone();
    let config = ws_config(&shared.limits);
    let mut admitted = None;
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, resp: Response| {
        let (resp, a) = admit(&front, remote, req, resp)?;
        admitted = Some(a);
        Ok(resp)
    };
    let ws = match tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)),
    )
    .await
    {
        Ok(Ok(ws)) => ws,
        Ok(Err(e)) => {
            tracing::debug!(%remote, error = %e, "WebSocket handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%remote, "WebSocket handshake timed out");
            return;
        }
    };
    drop(permit);
    match admitted {
        Some(Admitted::Session(handshake, slot)) => {
            shared.metrics.connection_opened();
            connection::serve(ws, shared.clone(), handshake, Some(slot)).await;
            shared.metrics.connection_closed();
        }
        #[cfg(feature = "conformance-echo")]
        Some(Admitted::Echo(slot)) => echo::serve(ws, slot).await,
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One address gets its share of the handshake pool; a trusted proxy only the pool.
    #[tokio::test]
    async fn handshake_shares_are_per_address_except_for_trusted_proxies() {
        let limits = Limits::default().with_max_pending_handshakes(3).with_max_pending_handshakes_per_address(1);
        let (shared, _shutdown) = crate::session::shared::test_shared(limits);
        let config =
            GatewayConfig::new(crate::kafka::config::KafkaConfig::new("127.0.0.1:9")).trusted_proxies(["10.0.0.1"]);
        let front = Arc::new(Front {
            door: Door::new(&config).expect("door"),
            tls: None,
            shared,
            echo_path: None,
            anonymous: false,
            pending: Arc::new(Semaphore::new(3)),
            pending_shares: Shares::new(1),
        });
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        let a = front.pending(ip("192.0.2.1")).expect("first from an address");
        assert!(front.pending(ip("192.0.2.1")).is_none(), "its share is 1");
        let p1 = front.pending(ip("10.0.0.1")).expect("proxy");
        let p2 = front.pending(ip("10.0.0.1")).expect("a trusted proxy has no share");
        assert!(front.pending(ip("192.0.2.2")).is_none(), "the pool of 3 is full");
        drop((a, p1, p2));
        assert!(front.pending(ip("192.0.2.1")).is_some(), "given back");
    }

    /// Every connection holds its `accept` task for its whole life: that task must stay
    /// small (the TLS handshake's state once made it about 11 KB, for `ws://` too).
    #[tokio::test]
    async fn the_per_connection_task_stays_small() {
        let (shared, _shutdown) = crate::session::shared::test_shared(Limits::default());
        let config = GatewayConfig::new(crate::kafka::config::KafkaConfig::new("127.0.0.1:9"));
        let pending = Arc::new(Semaphore::new(1));
        let door = Door::new(&config).expect("door");
        let front = Arc::new(Front {
            door,
            tls: None,
            shared,
            echo_path: None,
            anonymous: false,
            pending,
            pending_shares: Shares::new(64),
        });
        let permit = front.pending("127.0.0.1".parse().expect("ip")).expect("permit");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (tcp, remote) = listener.accept().await.expect("accept");
        let task = accept(tcp, remote, permit, front);
        let size = std::mem::size_of_val(&task);
        assert!(size <= 256, "accept future is {size} bytes");
    }
}
