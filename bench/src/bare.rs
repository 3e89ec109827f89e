//! The baseline: bare tokio-tungstenite servers with the gateway's WebSocket settings
//! and nothing else (no protocol, no Kafka, no queues beyond tungstenite's own).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kafkasocks::Limits;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Messages written between two flushes by the broadcast server ("queue the frames,
/// flush once").
const FLUSH_EVERY: usize = 512;

/// The WebSocket settings the gateway uses with its default limits (its `ws_config`):
/// its default read buffer (2 KiB), 16 KiB write buffer.
pub(crate) fn server_config() -> WebSocketConfig {
    let l = Limits::default();
    WebSocketConfig::default()
        .read_buffer_size(l.read_buffer_bytes)
        .write_buffer_size(l.write_buffer_bytes)
        .max_write_buffer_size(l.write_buffer_bytes + l.send_queue_bytes + (1 << 20))
        .max_message_size(Some(l.max_message_bytes))
        .max_frame_size(Some(l.max_message_bytes))
}

async fn accept(tcp: TcpStream) -> Option<tokio_tungstenite::WebSocketStream<TcpStream>> {
    let _ = tcp.set_nodelay(true);
    tokio_tungstenite::accept_async_with_config(tcp, Some(server_config())).await.ok()
}

/// What the broadcast server sends once told to go.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) messages: Arc<Vec<Bytes>>,
    pub(crate) stop_at: Instant,
}

/// Fan-out baseline: every accepted client gets the same messages, written the fast
/// way: `feed` (tungstenite writes to the socket whenever its write buffer passes
/// 16 KiB) and one flush every [`FLUSH_EVERY`] messages.
pub(crate) struct BroadcastServer {
    pub(crate) addr: SocketAddr,
    pub(crate) accepted: Arc<AtomicUsize>,
    go: watch::Sender<Option<Arc<Job>>>,
    task: JoinHandle<()>,
}

impl BroadcastServer {
    pub(crate) async fn start() -> Result<BroadcastServer> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let accepted = Arc::new(AtomicUsize::new(0));
        let (go, go_rx) = watch::channel(None::<Arc<Job>>);
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut go = go_rx.clone();
                let count = count.clone();
                tokio::spawn(async move {
                    let Some(mut ws) = accept(tcp).await else { return };
                    count.fetch_add(1, Ordering::Relaxed);
                    let Ok(job) = go.wait_for(Option::is_some).await.map(|j| j.clone()) else { return };
                    let Some(job) = job else { return };
                    for chunk in job.messages.chunks(FLUSH_EVERY) {
                        if Instant::now() >= job.stop_at {
                            break;
                        }
                        for m in chunk {
                            if ws.feed(Message::Binary(m.clone())).await.is_err() {
                                return;
                            }
                        }
                        if ws.flush().await.is_err() {
                            return;
                        }
                    }
                    // Hold the socket until the client is done reading.
                    while let Some(Ok(_)) = ws.next().await {}
                });
            }
        });
        Ok(BroadcastServer { addr, accepted, go, task })
    }

    pub(crate) fn go(&self, job: Job) {
        let _ = self.go.send(Some(Arc::new(job)));
    }
}

impl Drop for BroadcastServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Storm baseline: a live feed. Every `interval` a message carrying a sequence number
/// goes to every connected client.
pub(crate) struct LiveServer {
    pub(crate) addr: SocketAddr,
    /// The sequence number of the last message sent.
    pub(crate) seq: Arc<AtomicU64>,
    tasks: Vec<JoinHandle<()>>,
}

impl LiveServer {
    /// `backlog`: the accept-queue length; `None` binds with tokio's `TcpListener::bind`
    /// (128).
    pub(crate) async fn start(interval: Duration, message_bytes: usize, backlog: Option<u32>) -> Result<LiveServer> {
        let listener = match backlog {
            Some(b) => crate::net::listen_with_backlog(b)?,
            None => TcpListener::bind("127.0.0.1:0").await?,
        };
        LiveServer::serve(listener, interval, message_bytes, 0)
    }

    fn serve(listener: TcpListener, interval: Duration, message_bytes: usize, after: u64) -> Result<LiveServer> {
        let addr = listener.local_addr()?;
        let (tx, _) = broadcast::channel::<Bytes>(1024);
        let seq = Arc::new(AtomicU64::new(after));
        let ticker = {
            let (tx, seq) = (tx.clone(), seq.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(interval);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tick.tick().await;
                    let n = seq.load(Ordering::Relaxed) + 1;
                    let mut m = n.to_be_bytes().to_vec();
                    m.resize(message_bytes, b'x');
                    seq.store(n, Ordering::Relaxed);
                    let _ = tx.send(m.into());
                }
            })
        };
        let acceptor = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let mut rx = tx.subscribe();
                tokio::spawn(async move {
                    let Some(mut ws) = accept(tcp).await else { return };
                    loop {
                        match rx.recv().await {
                            Ok(m) => {
                                if ws.send(Message::Binary(m)).await.is_err() {
                                    return;
                                }
                            }
                            Err(broadcast::error::RecvError::Lagged(_)) => {}
                            Err(broadcast::error::RecvError::Closed) => return,
                        }
                    }
                });
            }
        });
        Ok(LiveServer { addr, seq, tasks: vec![ticker, acceptor] })
    }
}

impl Drop for LiveServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Deploy baseline, `serve-live-bare ADDR FIRST_SEQ INTERVAL_MS BYTES` in a child process:
/// a [`LiveServer`] on ADDR (`127.0.0.1:0`: any port) with an accept queue of 4,096 (as the
/// gateway's), its first message numbered FIRST_SEQ + 1; prints `LISTENING addr`; exits on
/// stdin EOF, which closes every connection at once.
pub(crate) async fn serve_live_child(addr: SocketAddr, first_seq: u64, interval: Duration, bytes: usize) -> Result<()> {
    let listener = crate::net::listen_on(addr, crate::net::LARGE_BACKLOG)?;
    let server = LiveServer::serve(listener, interval, bytes, first_seq)?;
    println!("LISTENING {}", server.addr);
    crate::gateway::stdin_closed().await;
    drop(server);
    Ok(())
}

/// Memory baseline, `serve-bare` in a child process: each connection reads one
/// message, answers with `replies` 100-byte messages, then idles reading.
pub(crate) async fn serve_idle_child(replies: usize) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    println!("LISTENING {}", listener.local_addr()?);
    let acceptor = tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some(mut ws) = accept(tcp).await else { return };
                if !matches!(ws.next().await, Some(Ok(_))) {
                    return;
                }
                for n in 0..replies {
                    let value = crate::kafka::record_value(n as u64);
                    if ws.feed(Message::Binary(value.into())).await.is_err() {
                        return;
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
                while let Some(Ok(_)) = ws.next().await {}
            });
        }
    });
    crate::gateway::stdin_closed().await;
    acceptor.abort();
    Ok(())
}
