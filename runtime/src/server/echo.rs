//! Test-only (feature `conformance-echo`): an echo loop behind the gateway's own accept
//! path, for the Autobahn WebSocket suite. Text and binary messages come back as they
//! came; a protocol violation closes with 1002, invalid UTF-8 with 1007, an oversized
//! message with 1009.

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::session::clients::Slot;

pub(super) async fn serve<S>(mut ws: WebSocketStream<S>, _slot: Slot)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(m) = ws.next().await {
        let close = match m {
            Ok(m @ (Message::Text(_) | Message::Binary(_))) => {
                if ws.send(m).await.is_err() {
                    return;
                }
                continue;
            }
            Ok(Message::Close(_)) => {
                // tungstenite answered the close; flush it.
                let _ = ws.flush().await;
                return;
            }
            Ok(_) => continue,
            Err(Error::Protocol(_)) => CloseCode::Protocol,
            Err(Error::Utf8(_)) => CloseCode::Invalid,
            Err(Error::Capacity(_)) => CloseCode::Size,
            Err(_) => return,
        };
        let _ = ws.send(Message::Close(Some(CloseFrame { code: close, reason: "".into() }))).await;
        let _ = ws.flush().await;
        // As the gateway's sessions do: read on, so the close is not lost to a reset.
        crate::session::connection::close_after(&mut ws).await;
        return;
    }
}
