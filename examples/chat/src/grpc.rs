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

use std::net::SocketAddr;
use std::time::Duration;

use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

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
