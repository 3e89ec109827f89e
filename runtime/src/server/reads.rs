//! Socket reads that hold memory only while bytes are waiting to be parsed.
//!
//! tungstenite keeps a read buffer of its configured size for a connection's whole life,
//! and an idle connection spends most of its life waiting. Under it, [`ReadAhead`] reads
//! the socket in chunks of [`Limits::read_buffer_bytes`](crate::Limits::read_buffer_bytes)
//! into the stack, hands tungstenite what it asks for, and keeps the rest on the heap
//! only until tungstenite takes it. tungstenite itself is given a small read buffer
//! ([`WS_READ_BYTES`]): what it asks for in one read, not what one system call reads.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Limits;

/// tungstenite's own read buffer per connection. It keeps the capacity of the largest
/// frame it received (a Hello with its token, usually), so it starts small.
pub(crate) const WS_READ_BYTES: usize = 256;

/// The most one read from the socket takes into the stack. A larger
/// `read_buffer_bytes` is read in a heap buffer of that size, freed once parsed.
const STACK_BYTES: usize = 16 << 10;

/// The socket and WebSocket settings every session is served with: tungstenite's small
/// read buffer ([`WS_READ_BYTES`]) is only right with [`ReadAhead`] under it.
pub(crate) fn websocket_io<S>(stream: S, limits: &Limits) -> (ReadAhead<S>, WebSocketConfig) {
    (ReadAhead::new(stream, limits.read_buffer_bytes), ws_config(limits))
}

/// The WebSocket settings of every session: [`Limits`]' message, frame and buffer sizes.
fn ws_config(limits: &Limits) -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(WS_READ_BYTES)
        .write_buffer_size(limits.write_buffer_bytes)
        .max_write_buffer_size(limits.write_buffer_bytes + limits.send_queue_bytes + (1 << 20))
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
}

/// A socket whose reads beyond what its reader asked for are kept only until asked for.
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// The most one read from the socket takes.
    chunk: usize,
    /// Read from the socket, not yet taken: `ahead[at..]`. Empty (no allocation) when
    /// everything read was taken.
    ahead: Vec<u8>,
    at: usize,
}

impl<S> ReadAhead<S> {
    pub(crate) fn new(inner: S, chunk: usize) -> ReadAhead<S> {
        ReadAhead { inner, chunk: chunk.max(1), ahead: Vec::new(), at: 0 }
    }

    /// Gives `buf` what was read ahead; frees it once all of it was given.
    fn give(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.ahead.len() - self.at);
        buf.put_slice(&self.ahead[self.at..self.at + n]);
        self.at += n;
        if self.at == self.ahead.len() {
            self.ahead = Vec::new();
            self.at = 0;
        }
    }

    /// Keeps what `buf` cannot take of `read` for the next reads, and gives it the rest.
    fn split(&mut self, read: &[u8], buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(read.len());
        buf.put_slice(&read[..n]);
        if n < read.len() {
            self.ahead = read[n..].to_vec();
            self.at = 0;
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.at < this.ahead.len() {
            this.give(buf);
            return Poll::Ready(Ok(()));
        }
        if buf.remaining() >= this.chunk {
            // The reader asks for at least a chunk: read straight into its buffer.
            return Pin::new(&mut this.inner).poll_read(cx, buf);
        }
        if this.chunk <= STACK_BYTES {
            let mut stack = [MaybeUninit::<u8>::uninit(); STACK_BYTES];
            let mut read = ReadBuf::uninit(&mut stack[..this.chunk]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            this.split(read.filled(), buf);
        } else {
            let mut heap = vec![0u8; this.chunk];
            let mut read = ReadBuf::new(&mut heap);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            let n = read.filled().len();
            heap.truncate(n);
            (this.ahead, this.at) = (heap, 0);
            this.give(buf);
        }
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ReadAhead<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Every byte comes out once and in order, whatever the sizes of the reads asked
    /// for and of the chunks read; nothing is kept once everything was taken.
    #[tokio::test]
    async fn reads_give_every_byte_once_in_order_and_keep_nothing_after() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for chunk in [1, 7, 256, 2048, STACK_BYTES, STACK_BYTES + 1, 100_000] {
            for ask in [1, 14, 256, 4096] {
                let (mut tx, rx) = tokio::io::duplex(4096);
                let sent = data.clone();
                let writer = tokio::spawn(async move {
                    tx.write_all(&sent).await.expect("io");
                });
                let mut r = ReadAhead::new(rx, chunk);
                let mut got = Vec::with_capacity(data.len());
                let mut b = vec![0u8; ask];
                while got.len() < data.len() {
                    let n = r.read(&mut b).await.expect("io");
                    assert!(n > 0, "chunk {chunk}, ask {ask}: end before all bytes");
                    got.extend_from_slice(&b[..n]);
                }
                writer.await.expect("the writer");
                assert_eq!(got, data, "chunk {chunk}, ask {ask}");
                assert_eq!(r.ahead.capacity(), 0, "chunk {chunk}, ask {ask}: bytes kept after all were taken");
                assert_eq!(r.read(&mut b).await.expect("io"), 0, "end of stream");
            }
        }
    }

    /// Through tungstenite with the gateway's settings: messages of any size, and many
    /// small ones in one socket read, come out whole and in order.
    #[tokio::test]
    async fn a_websocket_over_it_reads_large_and_small_messages() {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::WebSocketStream;
        use tokio_tungstenite::tungstenite::Message;
        use tokio_tungstenite::tungstenite::protocol::Role;

        let limits = crate::Limits::default();
        let (client_io, server_io) = tokio::io::duplex(1 << 20);
        let (server_io, config) = websocket_io(server_io, &limits);
        let mut server = WebSocketStream::from_raw_socket(server_io, Role::Server, Some(config)).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let sizes: Vec<usize> = (0..300).map(|i| if i % 50 == 7 { 200_000 + i } else { i % 40 }).collect();
        let sent = sizes.clone();
        let writer = tokio::spawn(async move {
            for (i, n) in sent.into_iter().enumerate() {
                let body: Vec<u8> = (0..n).map(|j| (i + j) as u8).collect();
                client.feed(Message::binary(body)).await.expect("send");
            }
            client.flush().await.expect("flush");
            client
        });
        for (i, &n) in sizes.iter().enumerate() {
            match server.next().await {
                Some(Ok(Message::Binary(b))) => {
                    assert_eq!(b.len(), n, "message {i}");
                    assert!(b.iter().enumerate().all(|(j, &x)| x == (i + j) as u8), "message {i}'s bytes");
                }
                other => panic!("message {i}: {other:?}"),
            }
        }
        drop(writer.await.expect("the writer"));
    }

    /// A chunk larger than the read asked for is read at once: one read of the socket
    /// serves several small reads, and what is left waits on the heap.
    #[tokio::test]
    async fn one_socket_read_serves_several_small_reads() {
        let (mut tx, rx) = tokio::io::duplex(8192);
        tx.write_all(&[5u8; 3000]).await.expect("io");
        let mut r = ReadAhead::new(rx, 2048);
        let mut b = [0u8; 256];
        assert_eq!(r.read(&mut b).await.expect("io"), 256);
        assert_eq!(r.ahead.len() - r.at, 2048 - 256, "the rest of the chunk waits");
        for _ in 0..7 {
            assert_eq!(r.read(&mut b).await.expect("io"), 256);
        }
        assert_eq!(r.ahead.capacity(), 0, "freed once taken");
        assert_eq!(r.read(&mut b).await.expect("io"), 256, "the next chunk");
    }
}
