//! The gateway's own WebSocket listener (`ws://`, or `wss://` with rustls): the accept
//! queue, a bound on handshakes in progress (in all and per peer address) and on their
//! time, TLS, and the upgrade, whose request goes through the same checks as an embedding
//! server's ([`GatewayService`]) before the session starts.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
#[cfg(feature = "tls")]
pub(crate) use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};

use super::admission::Refusal;
use super::reads::websocket_io;
use super::service::GatewayService;
use super::shares::{Share, Shares};
use crate::config::Limits;
use crate::error::Error;

#[cfg(not(feature = "tls"))]
#[derive(Clone)]
pub(crate) enum TlsAcceptor {}

/// A bound listener and what each new connection on it needs.
pub(crate) struct Listener {
    tcp: TcpListener,
    tls: Option<TlsAcceptor>,
    service: GatewayService,
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

/// Binds `addr` with an accept queue of `backlog`.
pub(crate) fn listen(addr: SocketAddr, backlog: u32) -> Result<TcpListener, Error> {
    let bind = || {
        let socket = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(backlog)
    };
    bind().map_err(|source| Error::Bind { addr, source })
}

impl Listener {
    pub(crate) fn new(
        tcp: TcpListener,
        tls: Option<TlsAcceptor>,
        service: GatewayService,
        limits: &Limits,
    ) -> Listener {
        Listener {
            tcp,
            tls,
            service,
            pending: Arc::new(Semaphore::new(limits.max_pending_handshakes)),
            pending_shares: Shares::new(limits.max_pending_handshakes_per_address),
        }
    }

    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        self.tcp.local_addr().ok()
    }

    pub(crate) fn tls(&self) -> bool {
        self.tls.is_some()
    }

    /// A place for a new handshake from `ip`, unless the pool or that address's share of it
    /// is full. A trusted proxy carries many clients: it has no share, only the pool.
    fn pending(&self, ip: IpAddr) -> Option<Pending> {
        let permit = self.pending.clone().try_acquire_owned().ok()?;
        let share = if self.service.front().door.trusted(ip) { None } else { Some(self.pending_shares.take(ip)?) };
        Some(Pending { _share: share, _permit: permit })
    }

    /// Accepts connections until `shutdown` turns true; returns the connections' tasks
    /// (handshakes and sessions), for the drain.
    pub(crate) async fn serve(self, mut shutdown: watch::Receiver<bool>) -> JoinSet<()> {
        let listener = Arc::new(self);
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                r = listener.tcp.accept() => match r {
                    Ok((tcp, remote)) => match listener.pending(remote.ip()) {
                        Some(permit) => {
                            let _ = tcp.set_nodelay(true);
                            conns.spawn(accept(tcp, remote, permit, listener.clone()));
                        }
                        // Too many handshakes in progress: close at once, read nothing.
                        None => {
                            listener.service.front().shared.metrics.connection_rejected("handshakes");
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
        conns
    }
}

/// One accepted connection, for its whole life. Each branch is boxed: a task's memory is
/// sized for the largest state of its future, and the TLS handshake's state (rustls, held
/// inline) would otherwise cost every connection, `ws://` included, about 9 KB for as long
/// as it lives (measured with heaptrack in bench/). The handshake (TLS and the upgrade
/// request) has [`Limits::handshake_timeout`] and holds one of the
/// [`Limits::max_pending_handshakes`] permits until it is done.
async fn accept(tcp: TcpStream, remote: SocketAddr, permit: Pending, listener: Arc<Listener>) {
    let timeout = listener.service.front().shared.limits.handshake_timeout;
    match listener.tls.clone() {
        #[cfg(feature = "tls")]
        Some(acceptor) => {
            Box::pin(async move {
                let started = tokio::time::Instant::now();
                match tokio::time::timeout(timeout, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => upgrade(stream, remote, permit, started + timeout, listener).await,
                    Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
                    Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
                }
            })
            .await
        }
        #[cfg(not(feature = "tls"))]
        Some(never) => match never {},
        None => {
            let deadline = tokio::time::Instant::now() + timeout;
            Box::pin(upgrade(tcp, remote, permit, deadline, listener)).await
        }
    }
}

fn error_response(refusal: Refusal) -> ErrorResponse {
    let mut err = ErrorResponse::new(Some(refusal.body().to_owned()));
    *err.status_mut() = refusal.status();
    *err.headers_mut() = refusal.headers().clone();
    err
}

async fn upgrade<S>(
    stream: S,
    remote: SocketAddr,
    permit: Pending,
    deadline: tokio::time::Instant,
    listener: Arc<Listener>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = &listener.service;
    let (stream, config) = websocket_io(stream, &service.front().shared.limits);
    let mut admitted = None;
    #[allow(clippy::result_large_err)]
    let callback = |req: &Request, mut resp: Response| {
        let admission = service.check(req.headers(), req.uri(), Some(remote)).map_err(error_response)?;
        resp.headers_mut().extend(admission.headers);
        admitted = Some(admission.admitted);
        Ok(resp)
    };
    // Boxed while it runs, as in `accept`: the connection's task keeps only the session.
    let ws = match Box::pin(tokio::time::timeout_at(
        deadline,
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(config)),
    ))
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
    if let Some(admitted) = admitted {
        service.serve_upgraded(admitted, ws).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::GatewayConfig;
    use crate::server::door::Door;
    use crate::server::readiness::Readiness;
    use crate::server::service::Front;
    use crate::server::sessions::Sessions;

    async fn listener(limits: Limits, config: &GatewayConfig) -> Listener {
        let (shared, _shutdown) = crate::session::shared::test_shared(limits.clone());
        let front = Front {
            door: Door::new(config).expect("door"),
            shared,
            echo_path: None,
            sessions: Sessions::new(),
            readiness: Readiness::new(Duration::ZERO).0,
        };
        let tcp = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Listener::new(tcp, None, GatewayService::new(front), &limits)
    }

    /// A connection's task keeps, for its life, its future's largest state: the WebSocket
    /// handshake is boxed while it runs and the session in its own allocation, so the
    /// upgrade holds neither twice (2,424 B a connection before, bench/ `memory`).
    #[tokio::test]
    async fn an_upgraded_connection_s_task_stays_small() {
        let config = GatewayConfig::new(crate::kafka::config::KafkaConfig::new("127.0.0.1:9"));
        let listener = Arc::new(listener(Limits::default(), &config).await);
        let _client = TcpStream::connect(listener.tcp.local_addr().expect("addr")).await.expect("connect");
        let (tcp, remote) = listener.tcp.accept().await.expect("accept");
        let permit = listener.pending(remote.ip()).expect("permit");
        let task = upgrade(tcp, remote, permit, tokio::time::Instant::now(), listener.clone());
        assert!(std::mem::size_of_val(&task) <= 768, "upgrade: {} B", std::mem::size_of_val(&task));
    }

    /// One address gets its share of the handshake pool; a trusted proxy only the pool.
    #[tokio::test]
    async fn handshake_shares_are_per_address_except_for_trusted_proxies() {
        let limits = Limits::default().with_max_pending_handshakes(3).with_max_pending_handshakes_per_address(1);
        let config =
            GatewayConfig::new(crate::kafka::config::KafkaConfig::new("127.0.0.1:9")).trusted_proxies(["10.0.0.1"]);
        let front = listener(limits, &config).await;
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
        let config = GatewayConfig::new(crate::kafka::config::KafkaConfig::new("127.0.0.1:9"));
        let listener = Arc::new(listener(Limits::default(), &config).await);
        let permit = listener.pending("127.0.0.1".parse().expect("ip")).expect("permit");
        let addr = listener.tcp.local_addr().expect("addr");
        let _client = TcpStream::connect(addr).await.expect("connect");
        let (tcp, remote) = listener.tcp.accept().await.expect("accept");
        let task = accept(tcp, remote, permit, listener.clone());
        let size = std::mem::size_of_val(&task);
        assert!(size <= 256, "accept future is {size} bytes");
    }
}
