//! The gRPC server (`CHAT_GRPC_ADDR`): the chat's streams as a tonic service, bounded.
//! Every call carries `authorization: Bearer <token>`, which the generated service checks
//! with the gateway's authenticator and permissions, as for a WebSocket session.
//!
//! | bound | value | tonic's default |
//! |---|---|---|
//! | calls handled at once per connection ([`CONCURRENCY_PER_CONNECTION`]) | 64; more wait their turn | unbounded |
//! | HTTP/2 streams open at once per connection ([`MAX_CONCURRENT_STREAMS`]), subscriptions included | 128 | unbounded |
//! | HTTP/2 keepalive PING ([`KEEPALIVE_INTERVAL`], [`KEEPALIVE_TIMEOUT`]) | every 30 s, answered within 10 s | none |
//! | TCP keepalive ([`TCP_KEEPALIVE`]) | after 60 s idle | none |
//! | time to the response head ([`CALL_TIMEOUT`]) | 15 s: all of a `Post` (Kafka's acknowledgement included; the gateway itself gives up on Kafka after 10 s), a subscription until it starts streaming | none |
//! | request header block ([`MAX_HEADER_LIST_BYTES`]) | 16 KiB | 16 KiB |
//! | message size | the gateway's `Limits::max_message_bytes` (1 MiB), set by `into_service()` | 4 MiB |
//! | connections at once ([`MAX_CONNECTIONS`], [`MAX_CONNECTIONS_PER_ADDRESS`]) | 1024, 64 per address; more are closed at once | unbounded |
//! | time to a connection's first bytes (the HTTP/2 preface, [`FIRST_BYTES_TIMEOUT`]) | 10 s | unbounded |

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::transport::Server;
use tonic::transport::server::{Connected, TcpConnectInfo, TcpIncoming};

/// Connections the gRPC port serves at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;
/// Of those, from one address.
pub(crate) const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Time a new connection has to send its first bytes (tonic has no preface timeout).
pub(crate) const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls handled at once on one connection; more wait for a turn.
pub(crate) const CONCURRENCY_PER_CONNECTION: usize = 64;
/// HTTP/2 streams open at once on one connection.
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 128;
/// An HTTP/2 PING goes to a connection after this long…
pub(crate) const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …and must be answered within this, or the connection is closed.
pub(crate) const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// TCP keepalive probes start on a connection idle this long (dead peers behind NAT).
pub(crate) const TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Time a call has to produce its response head.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(15);
/// Largest request header block.
pub(crate) const MAX_HEADER_LIST_BYTES: u32 = 16 * 1024;

/// Binds the gRPC port (0: any free port), with TCP keepalive and no Nagle delay.
pub(crate) fn bind(addr: SocketAddr) -> anyhow::Result<TcpIncoming> {
    let incoming = TcpIncoming::bind(addr).map_err(|e| anyhow::anyhow!("binding the gRPC port {addr}: {e}"))?;
    Ok(incoming.with_nodelay(Some(true)).with_keepalive(Some(TCP_KEEPALIVE)))
}

/// The server with these bounds; add the service and serve it on [`bind`]'s port.
pub(crate) fn server() -> Server {
    Server::builder()
        .concurrency_limit_per_connection(CONCURRENCY_PER_CONNECTION)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        .timeout(CALL_TIMEOUT)
}

/// A connection of the gRPC port holding its place in the counts; its first bytes must come
/// within [`FIRST_BYTES_TIMEOUT`].
pub(crate) struct Bounded {
    stream: TcpStream,
    first_bytes: Option<Pin<Box<tokio::time::Sleep>>>,
    _slot: Slot,
}

struct Slot {
    _permit: OwnedSemaphorePermit,
    by_addr: Arc<Mutex<HashMap<IpAddr, usize>>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.by_addr.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.ip);
            }
        }
    }
}

/// The accepted connections of `incoming`, at most [`MAX_CONNECTIONS`] at once and
/// [`MAX_CONNECTIONS_PER_ADDRESS`] per address: more are closed as they arrive.
pub(crate) fn bounded(incoming: TcpIncoming) -> impl Stream<Item = io::Result<Bounded>> {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let by_addr: Arc<Mutex<HashMap<IpAddr, usize>>> = Arc::default();
    incoming.filter_map(move |conn| {
        let admitted = match conn {
            Err(e) => Some(Err(e)),
            Ok(stream) => admit(stream, &slots, &by_addr).map(Ok),
        };
        std::future::ready(admitted)
    })
}

fn admit(stream: TcpStream, slots: &Arc<Semaphore>, by_addr: &Arc<Mutex<HashMap<IpAddr, usize>>>) -> Option<Bounded> {
    let ip = stream.peer_addr().ok()?.ip();
    let permit = slots.clone().try_acquire_owned().ok()?;
    {
        let mut m = by_addr.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_CONNECTIONS_PER_ADDRESS {
            return None;
        }
        *n += 1;
    }
    let first_bytes = Some(Box::pin(tokio::time::sleep(FIRST_BYTES_TIMEOUT)));
    Some(Bounded { stream, first_bytes, _slot: Slot { _permit: permit, by_addr: by_addr.clone(), ip } })
}

impl Connected for Bounded {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Bounded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let read = Pin::new(&mut this.stream).poll_read(cx, buf);
        if let Some(deadline) = &mut this.first_bytes {
            match &read {
                Poll::Ready(_) if buf.filled().len() > before => this.first_bytes = None,
                Poll::Ready(_) => {}
                Poll::Pending => {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no request in time")));
                    }
                }
            }
        }
        read
    }
}

impl AsyncWrite for Bounded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}
