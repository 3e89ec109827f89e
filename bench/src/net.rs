//! Loopback plumbing: source addresses, connecting, and a TCP proxy that can cut every
//! connection through it at once.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Result;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

/// Rotates over the source addresses `127.0.<block>.2` to `127.0.<block>.<count + 1>`.
/// Each address has its own ~28,000 ephemeral ports, and each scenario its own block, so
/// that sockets a scenario leaves in TIME_WAIT do not starve the next one.
#[derive(Debug)]
pub(crate) struct Sources {
    block: u8,
    count: u32,
    next: AtomicU32,
}

impl Sources {
    pub(crate) fn new(block: u8, count: u8) -> Arc<Sources> {
        Arc::new(Sources { block, count: u32::from(count.max(1)), next: AtomicU32::new(0) })
    }

    pub(crate) fn next(&self) -> Ipv4Addr {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.count;
        Ipv4Addr::new(127, 0, self.block, 2 + i as u8)
    }

    /// Connects to `to` from the next source address, with `TCP_NODELAY`.
    pub(crate) async fn connect(&self, to: SocketAddr) -> std::io::Result<TcpStream> {
        let socket = TcpSocket::new_v4()?;
        socket.bind(SocketAddr::new(self.next().into(), 0))?;
        let tcp = socket.connect(to).await?;
        tcp.set_nodelay(true)?;
        Ok(tcp)
    }
}

/// The accept-queue length the proxy (and the bare storm server's second variant) use;
/// Linux caps it at `net.core.somaxconn` (4096 by default).
pub(crate) const LARGE_BACKLOG: u32 = 4096;

/// A listener on 127.0.0.1, port 0, with this accept-queue length. (tokio's
/// `TcpListener::bind` asks for 128, as the standard library does.)
pub(crate) fn listen_with_backlog(backlog: u32) -> std::io::Result<TcpListener> {
    listen_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), backlog)
}

/// A listener on `addr` (SO_REUSEADDR, as the gateway binds) with this accept-queue length.
pub(crate) fn listen_on(addr: SocketAddr, backlog: u32) -> std::io::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(backlog)
}

/// A TCP proxy on loopback; [`Proxy::cut`] drops every connection through it, as a
/// network failure would, while it keeps accepting new ones.
pub(crate) struct Proxy {
    pub(crate) addr: SocketAddr,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start(target: SocketAddr, outbound: Arc<Sources>) -> Result<Proxy> {
        // A deep accept queue, so that the proxy is never where a storm's SYNs are dropped.
        let listener = listen_with_backlog(LARGE_BACKLOG)?;
        let addr = listener.local_addr()?;
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let list = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let _ = inbound.set_nodelay(true);
                let outbound = outbound.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut upstream) = outbound.connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut upstream).await;
                    }
                });
                let mut list = list.lock().unwrap_or_else(|p| p.into_inner());
                if list.len() > 4096 {
                    list.retain(|t| !t.is_finished());
                }
                list.push(task);
            }
        });
        Ok(Proxy { addr, conns, accept })
    }

    /// Cuts every open connection; returns how many were open.
    pub(crate) fn cut(&self) -> usize {
        let tasks = std::mem::take(&mut *self.conns.lock().unwrap_or_else(|p| p.into_inner()));
        let mut open = 0;
        for t in tasks {
            if !t.is_finished() {
                open += 1;
            }
            t.abort();
        }
        open
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// The runtime the benchmark's clients run on: separate from the one serving (gateway,
/// bare servers, proxy), as separate processes would be, so that the OS shares the
/// cores between servers and clients instead of one tokio scheduler queueing 1,000
/// writers ahead of 1,000 readers. Two workers, like the serving runtime.
pub(crate) fn client_runtime() -> &'static tokio::runtime::Handle {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(std::thread::available_parallelism().map_or(2, |n| n.get()))
                .thread_name("bench-client")
                .enable_all()
                .build()
                .unwrap_or_else(|e| panic!("cannot start the client runtime: {e}"))
        })
        .handle()
}
