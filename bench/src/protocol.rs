//! A raw `kafkasocks.v1` client (docs/protocol.md), as thin as the bare baseline's
//! clients: one WebSocket, frames encoded with the `kafkasocks::wire` types, and Data
//! frames counted by walking their bytes instead of decoding every record.

use std::net::SocketAddr;

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use kafkasocks::wire::{self, frame::Kind, start_position::Position};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::net::Sources;

pub(crate) type Ws = WebSocketStream<TcpStream>;

/// The tag byte of a `Frame` whose member is `Data` (field 5, length-delimited).
const DATA_TAG: u8 = 5 << 3 | 2;

/// WebSocket settings of the benchmark's clients (both kinds): tungstenite's defaults
/// except the read buffer, which is what a client holds per connection.
pub(crate) fn client_config(read_buffer: usize) -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(read_buffer)
}

/// Opens a WebSocket to `addr` from the next source address, offering `subprotocol`.
pub(crate) async fn connect_ws(
    sources: &Sources,
    addr: SocketAddr,
    subprotocol: Option<&str>,
    config: WebSocketConfig,
) -> Result<Ws> {
    let mut request = format!("ws://{addr}/streams").into_client_request()?;
    if let Some(p) = subprotocol {
        request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p)?);
    }
    let tcp = sources.connect(addr).await.with_context(|| format!("connecting to {addr}"))?;
    let (ws, _) = tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
    Ok(ws)
}

/// What arrived on a gateway connection.
#[derive(Debug)]
pub(crate) enum Event {
    /// A Data frame, undecoded.
    Data(Bytes),
    /// Any other frame (Pings are answered and skipped).
    Frame(Kind),
    /// The connection is gone (close frame, EOF or error).
    Closed,
}

/// One gateway session.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) ws: Ws,
}

impl Conn {
    /// Connects and completes Hello / Welcome.
    pub(crate) async fn open(sources: &Sources, addr: SocketAddr, config: WebSocketConfig) -> Result<Conn> {
        let ws = connect_ws(sources, addr, Some(kafkasocks::SUBPROTOCOL), config).await?;
        let mut conn = Conn { ws };
        conn.send(Kind::Hello(wire::Hello {
            protocol_version: 1,
            token: String::new(),
            client: "bench".into(),
            ..Default::default()
        }))
        .await?;
        match conn.recv().await? {
            Event::Frame(Kind::Welcome(_)) => Ok(conn),
            other => bail!("expected Welcome, got {other:?}"),
        }
    }

    pub(crate) async fn send(&mut self, kind: Kind) -> Result<()> {
        self.ws.send(Message::Binary(wire::Frame { kind: Some(kind) }.encode_to_vec().into())).await?;
        Ok(())
    }

    /// Subscribes `id` to `method` (every record: empty request).
    pub(crate) async fn subscribe(&mut self, id: u32, method: &str, start: Position, credit: u32) -> Result<()> {
        self.send(Kind::Subscribe(wire::Subscribe {
            id,
            method: method.into(),
            request: Bytes::new(),
            start: Some(wire::StartPosition { position: Some(start) }),
            credit,
        }))
        .await
    }

    /// The next event.
    pub(crate) async fn recv(&mut self) -> Result<Event> {
        loop {
            let bytes = match self.ws.next().await {
                Some(Ok(Message::Binary(b))) => b,
                Some(Ok(Message::Close(_))) | None => return Ok(Event::Closed),
                Some(Ok(_)) => continue,
                Some(Err(tungstenite::Error::Io(_) | tungstenite::Error::Protocol(_))) => return Ok(Event::Closed),
                Some(Err(e)) => return Err(e.into()),
            };
            if bytes.first() == Some(&DATA_TAG) {
                return Ok(Event::Data(bytes));
            }
            match wire::Frame::decode(bytes)?.kind {
                Some(Kind::Ping(p)) => self.send(Kind::Pong(wire::Pong { nonce: p.nonce })).await?,
                Some(k) => return Ok(Event::Frame(k)),
                None => {}
            }
        }
    }
}

/// Latest start.
pub(crate) fn latest() -> Position {
    Position::Latest(wire::Empty {})
}

/// Earliest start.
pub(crate) fn earliest() -> Position {
    Position::Earliest(wire::Empty {})
}

/// The records of a Data frame, counted without decoding them: (count, the last
/// record's bytes).
pub(crate) fn count_records(frame: &[u8]) -> Result<(u64, &[u8])> {
    let mut buf = frame.get(1..).context("empty frame")?;
    let len = wire::read_varint(&mut buf).context("truncated Data")? as usize;
    let mut data = buf.get(..len).context("truncated Data")?;
    let (mut count, mut last): (u64, &[u8]) = (0, &[]);
    while !data.is_empty() {
        let key = wire::read_varint(&mut data).context("truncated field")?;
        match (key >> 3, key & 7) {
            (_, 0) => {
                wire::read_varint(&mut data).context("truncated varint")?;
            }
            (field, 2) => {
                let n = wire::read_varint(&mut data).context("truncated length")? as usize;
                let value = data.get(..n).context("truncated record")?;
                data = &data[n..];
                if field == 2 {
                    count += 1;
                    last = value;
                }
            }
            (_, wt) => bail!("unexpected wire type {wt} in Data"),
        }
    }
    Ok((count, last))
}

/// Every record of a Data frame, decoded.
pub(crate) fn decode_records(frame: Bytes) -> Result<Vec<wire::Record>> {
    match wire::Frame::decode(frame)?.kind {
        Some(Kind::Data(d)) => Ok(d.records),
        other => bail!("not a Data frame: {other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_what_prost_decodes() {
        let records: Vec<wire::Record> = (0..5)
            .map(|i| wire::Record { offset: 1000 + i, payload: vec![7; 100].into(), ..Default::default() })
            .collect();
        let frame = wire::Frame { kind: Some(Kind::Data(wire::Data { subscription_id: 3, records })) }.encode_to_vec();
        let (n, last) = count_records(&frame).expect("counts");
        assert_eq!(n, 5);
        assert_eq!(wire::Record::decode(last).expect("decodes").offset, 1004);
        assert_eq!(decode_records(frame.into()).expect("decodes").len(), 5);
    }
}
