//! The chat example as its tests run it: the real `chat-gateway` binary on free ports,
//! its address line parsed, tokens fetched from its `POST /token`, and the chat's
//! messages as protobuf.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kafkasocks::wire::{self, frame::Kind};
use kafkasocks_tests::RawClient;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

/// `chat.v1.ChatMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ChatMessage {
    #[prost(string, tag = "1")]
    pub room: String,
    #[prost(string, tag = "2")]
    pub user: String,
    #[prost(string, tag = "3")]
    pub text: String,
    #[prost(int64, tag = "4")]
    pub sent_at_ms: i64,
}

/// `chat.v1.RoomFilter`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct RoomFilter {
    #[prost(string, tag = "1")]
    pub room: String,
}

/// `kafkasocks.Receipt`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Receipt {
    #[prost(string, tag = "1")]
    pub topic: String,
    #[prost(int32, tag = "2")]
    pub partition: i32,
    #[prost(int64, tag = "3")]
    pub offset: i64,
}

pub fn message(room: &str, user: &str, text: &str) -> ChatMessage {
    ChatMessage { room: room.to_owned(), user: user.to_owned(), text: text.to_owned(), sent_at_ms: 0 }
}

pub fn encode(m: &impl prost::Message) -> Vec<u8> {
    m.encode_to_vec()
}

/// A room name no other test uses.
pub fn unique_room(prefix: &str) -> String {
    format!("{prefix}-{:016x}", rand::random::<u64>())
}

/// A running `chat-gateway`; killed when dropped.
pub struct Chat {
    pub http: SocketAddr,
    pub ws: SocketAddr,
    pub grpc: SocketAddr,
    child: Child,
}

impl Chat {
    /// Starts it against the local plaintext Kafka (the environment's `KAFKA_*`), with
    /// these extra variables.
    pub async fn start(env: &[(&str, &str)]) -> Result<Chat> {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
        for (k, v) in env {
            cmd.env(k, v);
        }
        Chat::spawn(cmd).await
    }

    /// Starts `cmd` (the binary, configured by the caller) on free ports and waits for its
    /// address line.
    pub async fn spawn(mut cmd: Command) -> Result<Chat> {
        for var in ["CHAT_WS_ADDR", "CHAT_HTTP_ADDR", "CHAT_GRPC_ADDR", "CHAT_METRICS_ADDR"] {
            cmd.env(var, "127.0.0.1:0");
        }
        let mut child = cmd.stdout(Stdio::piped()).kill_on_drop(true).spawn()?;
        let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
        // Log lines go to stdout too: the address line starts with "chat: open".
        let line = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(l) = lines.next_line().await? {
                if l.starts_with("chat: open") {
                    return Ok(l);
                }
            }
            Ok::<_, std::io::Error>(String::new())
        })
        .await
        .context("no address line from chat-gateway within 60 s")??;
        // Keep reading its output, so that it never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        // chat: open http://HTTP/?ws=WS  (gateway ws://WS/streams, gRPC GRPC)
        let field = |after: &str, end: char| -> Result<SocketAddr> {
            let rest = line.split(after).nth(1).with_context(|| format!("no {after:?} in {line:?}"))?;
            let text = rest.split(end).next().unwrap_or_default().trim();
            text.parse().with_context(|| format!("{text:?} in {line:?}"))
        };
        Ok(Chat { http: field("http://", '/')?, ws: field("?ws=", ' ')?, grpc: field("gRPC ", ')')?, child })
    }

    /// The page's origin, as a browser sends it.
    pub fn origin(&self) -> String {
        format!("http://{}", self.http)
    }

    pub fn ws_url(&self) -> String {
        format!("ws://{}/streams", self.ws)
    }

    /// `POST /token` with this body: (status, body).
    pub async fn post_token(&self, content_type: &str, body: &[u8]) -> Result<(u16, String)> {
        http(self.http, "POST", "/token", content_type, body).await
    }

    /// A token for `user` from `POST /token`.
    pub async fn token(&self, user: &str) -> Result<String> {
        let body = serde_json::json!({ "user": user }).to_string();
        let (status, body) = self.post_token("application/json", body.as_bytes()).await?;
        anyhow::ensure!(status == 200, "POST /token: {status} {body}");
        let v: serde_json::Value = serde_json::from_str(&body)?;
        Ok(v["token"].as_str().context("no token")?.to_owned())
    }

    pub async fn stop(mut self) -> Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

/// One HTTP/1.1 request (`Connection: close`): (status, body).
pub async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> Result<(u16, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut buf)).await??;
    let text = String::from_utf8_lossy(&buf);
    let status = text.get(9..12).context("short response")?.parse()?;
    let body = text.split_once("\r\n\r\n").map(|x| x.1.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// The claims of a JWT, read without checking it.
pub fn claims(token: &str) -> Result<serde_json::Value> {
    let payload = token.split('.').nth(1).context("not a JWT")?;
    Ok(serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload)?)?)
}

/// Opens a session with `token` in Hello: Ok with the Welcome, or the close code.
pub async fn hello(ws: SocketAddr, token: &str) -> Result<std::result::Result<wire::Welcome, u16>> {
    let mut c = RawClient::connect(ws).await?;
    c.send(Kind::Hello(wire::Hello {
        protocol_version: 1,
        token: token.to_owned(),
        client: "chat-test".into(),
        ..Default::default()
    }))
    .await?;
    match c.recv().await {
        Ok(Some(Kind::Welcome(w))) => Ok(Ok(w)),
        Ok(_) => Ok(Err(c.until_close().await.0)),
        Err(e) => match e.downcast_ref::<kafkasocks_tests::Closed>() {
            Some(closed) => Ok(Err(closed.0)),
            None => bail!("{e:#}"),
        },
    }
}
