//! The chat example's security, tried as an attacker would: the real `chat-gateway`
//! binary against the real Kafka, each test with its own process on free ports.
//!
//! * WebSocket sessions without a valid token of this gateway's key close with 4001;
//! * pages of other origins get HTTP 403 before the upgrade;
//! * gRPC calls without a bearer token get UNAUTHENTICATED;
//! * the author written to Kafka is the token's subject, whatever the client sent;
//! * rooms outside the token's `rooms` claim are refused;
//! * `POST /token` accepts only sane names and small bodies.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use common::{Chat, ChatMessage, Receipt, RoomFilter, claims, encode, hello, message, unique_room};
use ed25519_dalek::pkcs8::EncodePrivateKey;
use kafkasocks::Code;
use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks_tests::{connect_from, read_back};
use prost::Message as _;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tonic::codegen::http::uri::PathAndQuery;

const POST: &str = "chat.v1.ChatStreams/Post";
const MESSAGES: &str = "chat.v1.ChatStreams/Messages";

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Claims the chat's tokens carry, for a token an attacker makes up.
fn forged_claims(sub: &str) -> serde_json::Value {
    serde_json::json!({
        "iss": "kafkasocks-chat", "aud": "kafkasocks-chat", "sub": sub,
        "iat": now(), "exp": now() + 600, "rooms": ["*"],
    })
}

fn b64(json: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(json.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_sessions_without_a_token_of_this_gateway_close_with_4001() -> anyhow::Result<()> {
    let chat = Chat::start(&[]).await?;
    let good = chat.token("ada").await?;
    let welcome = hello(chat.ws, &good).await?.map_err(|code| anyhow::anyhow!("a token from /token: closed {code}"))?;
    assert!(welcome.token_expires_at_ms > 0, "the session knows when its token expires");

    // The same claims, signed by another Ed25519 key.
    let other = ed25519_dalek::SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    let other_key = jsonwebtoken::EncodingKey::from_ed_der(other.to_pkcs8_der()?.as_bytes());
    let other_signed = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::EdDSA),
        &forged_claims("ada"),
        &other_key,
    )?;
    // Unsigned: `alg: none`, with and without the signature of a real token.
    let none_header = b64(&serde_json::json!({ "alg": "none", "typ": "JWT" }));
    let alg_none = format!("{none_header}.{}.", b64(&forged_claims("admin")));
    let good_signature = good.rsplit('.').next().unwrap();
    let alg_none_signed = format!("{none_header}.{}.{good_signature}", b64(&forged_claims("admin")));
    // A real token with its payload changed (another subject, the same signature).
    let mut payload = claims(&good)?;
    payload["sub"] = "admin".into();
    let parts: Vec<&str> = good.split('.').collect();
    let tampered = format!("{}.{}.{}", parts[0], b64(&payload), parts[2]);
    // A real token with its signature changed.
    let mut sig = URL_SAFE_NO_PAD.decode(parts[2])?;
    sig[0] ^= 1;
    let bad_signature = format!("{}.{}.{}", parts[0], parts[1], URL_SAFE_NO_PAD.encode(sig));

    for (what, token) in [
        ("no token", ""),
        ("garbage", "garbage"),
        ("three garbage parts", "a.b.c"),
        ("alg none", alg_none.as_str()),
        ("alg none with a real signature", alg_none_signed.as_str()),
        ("another key", other_signed.as_str()),
        ("a tampered payload", tampered.as_str()),
        ("a tampered signature", bad_signature.as_str()),
    ] {
        assert_eq!(hello(chat.ws, token).await?.err(), Some(4001), "{what}: refused with close 4001");
    }
    chat.stop().await
}

/// The WebSocket upgrade with this `Origin`: the HTTP status (101 when it went through).
async fn upgrade_status(ws: SocketAddr, origin: &str) -> anyhow::Result<u16> {
    let mut req = format!("ws://{ws}/streams").into_client_request()?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static(kafkasocks::SUBPROTOCOL));
    req.headers_mut().insert("Origin", HeaderValue::from_str(origin)?);
    let tcp = TcpStream::connect(ws).await?;
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((_, response)) => Ok(response.status().as_u16()),
        Err(tungstenite::Error::Http(response)) => Ok(response.status().as_u16()),
        Err(e) => Err(e.into()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_of_other_origins_get_403_before_the_upgrade() -> anyhow::Result<()> {
    let chat = Chat::start(&[("CHAT_ALLOWED_ORIGINS", "https://chat.example.com, https://other.example.com")]).await?;
    let port = chat.http.port();
    for origin in [
        "https://evil.example",
        "null",
        "http://127.0.0.1:1",
        &format!("https://127.0.0.1:{port}"),
        &format!("http://127.0.0.1:{port}.evil.example"),
        "https://chat.example.com.evil.example",
    ] {
        assert_eq!(upgrade_status(chat.ws, origin).await?, 403, "a page of {origin}");
    }
    for origin in [
        chat.origin(),
        format!("http://localhost:{port}"),
        "https://chat.example.com".into(),
        "https://other.example.com".into(),
    ] {
        assert_eq!(upgrade_status(chat.ws, &origin).await?, 101, "a page of {origin}");
    }
    chat.stop().await
}

async fn grpc_client(addr: SocketAddr) -> anyhow::Result<tonic::client::Grpc<tonic::transport::Channel>> {
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?.connect().await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    Ok(grpc)
}

fn with_token<T>(message: T, token: Option<&str>) -> anyhow::Result<tonic::Request<T>> {
    let mut request = tonic::Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
    }
    Ok(request)
}

async fn grpc_post(
    addr: SocketAddr,
    token: Option<&str>,
    m: ChatMessage,
) -> anyhow::Result<Result<Receipt, tonic::Status>> {
    let mut grpc = grpc_client(addr).await?;
    let codec = tonic_prost::ProstCodec::<ChatMessage, Receipt>::default();
    let path = PathAndQuery::from_static("/chat.v1.ChatStreams/Post");
    Ok(grpc.unary(with_token(m, token)?, path, codec).await.map(tonic::Response::into_inner))
}

async fn grpc_subscribe(
    addr: SocketAddr,
    token: Option<&str>,
    room: &str,
) -> anyhow::Result<Result<(), tonic::Status>> {
    let mut grpc = grpc_client(addr).await?;
    let codec = tonic_prost::ProstCodec::<RoomFilter, ChatMessage>::default();
    let path = PathAndQuery::from_static("/chat.v1.ChatStreams/Messages");
    let request = with_token(RoomFilter { room: room.to_owned() }, token)?;
    Ok(grpc.server_streaming(request, path, codec).await.map(|_| ()))
}

/// The message at the receipt, read back from Kafka.
async fn in_kafka(receipt: &Receipt) -> anyhow::Result<(Vec<u8>, ChatMessage)> {
    let (key, value) = read_back(&receipt.topic, receipt.partition, receipt.offset).await?;
    Ok((key, ChatMessage::decode(value.as_slice())?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_need_a_bearer_token_and_the_author_is_its_subject() -> anyhow::Result<()> {
    let chat = Chat::start(&[]).await?;
    let room = unique_room("grpc");
    for (what, token) in [("no token", None), ("garbage", Some("garbage")), ("an empty one", Some(""))] {
        let post = grpc_post(chat.grpc, token, message(&room, "ada", "hi")).await?;
        assert_eq!(post.err().map(|s| s.code()), Some(tonic::Code::Unauthenticated), "Post with {what}");
        let sub = grpc_subscribe(chat.grpc, token, &room).await?;
        assert_eq!(sub.err().map(|s| s.code()), Some(tonic::Code::Unauthenticated), "Messages with {what}");
    }
    let token = chat.token("ada").await?;
    // The caller claims to be someone else: the gateway writes the token's subject.
    let receipt = grpc_post(chat.grpc, Some(&token), message(&room, "mallory", "over gRPC")).await??;
    assert_eq!(receipt.topic, "chat.messages");
    let (key, written) = in_kafka(&receipt).await?;
    assert_eq!(key, room.as_bytes());
    assert_eq!((written.user.as_str(), written.text.as_str()), ("ada", "over gRPC"));
    grpc_subscribe(chat.grpc, Some(&token), &room).await?.map_err(|s| anyhow::anyhow!("Messages with a token: {s}"))?;
    chat.stop().await
}

/// Waits until `sub` is subscribed (it has a cursor) or fails with its first error.
async fn subscribed(sub: &mut kafkasocks::client::Subscription) -> anyhow::Result<Result<(), kafkasocks::Status>> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if sub.cursor().is_some() {
                return Ok(Ok(()));
            }
            tokio::select! {
                next = sub.next() => match next {
                    Some(Err(status)) => return Ok(Err(status)),
                    Some(Ok(d)) => anyhow::bail!("a record before subscribing: {d:?}"),
                    None => anyhow::bail!("the subscription ended"),
                },
                () = tokio::time::sleep(Duration::from_millis(20)) => {}
            }
        }
    })
    .await?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_author_in_kafka_is_the_tokens_subject_and_fields_are_bounded() -> anyhow::Result<()> {
    let chat = Chat::start(&[]).await?;
    let client = Client::connect(ClientConfig::new(chat.ws_url()).token(chat.token("Ada Lovelace").await?));
    let room = unique_room("author");
    let mut sub = client.subscribe(MESSAGES, encode(&RoomFilter { room: room.clone() }), StartAt::Latest);
    subscribed(&mut sub).await??;
    let receipt = client.publish(POST, encode(&message(&room, "mallory", "  who wrote this?  "))).await?;
    let receipt = Receipt { topic: receipt.topic, partition: receipt.partition, offset: receipt.offset };
    let (_, written) = in_kafka(&receipt).await?;
    assert_eq!((written.user.as_str(), written.text.as_str()), ("Ada Lovelace", "who wrote this?"));
    assert!(written.sent_at_ms > 0, "the gateway stamps the time");
    let got = tokio::time::timeout(Duration::from_secs(30), sub.next()).await?.unwrap()?;
    assert_eq!(ChatMessage::decode(got.payload)?.user, "Ada Lovelace", "subscribers see the token's subject");

    let refused = |m: ChatMessage| {
        let client = &client;
        async move { client.publish(POST, encode(&m)).await.err().map(|s| s.code()) }
    };
    assert_eq!(refused(message(&room, "", &"x".repeat(501))).await, Some(Code::InvalidArgument), "text over 500");
    assert_eq!(refused(message(&room, "", "   ")).await, Some(Code::InvalidArgument), "no text");
    assert_eq!(refused(message(&"r".repeat(41), "", "hi")).await, Some(Code::InvalidArgument), "room over 40");
    assert_eq!(refused(message("a room", "", "hi")).await, Some(Code::InvalidArgument), "room with a space");
    assert!(client.publish(POST, encode(&message(&room, "", &"é".repeat(500)))).await.is_ok(), "500 characters");
    client.close();
    chat.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_outside_the_tokens_rooms_claim_are_refused() -> anyhow::Result<()> {
    let (mine, theirs) = (unique_room("mine"), unique_room("theirs"));
    let chat = Chat::start(&[("CHAT_TOKEN_ROOMS", &format!("{mine},lobby"))]).await?;
    let token = chat.token("ada").await?;
    assert_eq!(claims(&token)?["rooms"], serde_json::json!([mine, "lobby"]));
    let client = Client::connect(ClientConfig::new(chat.ws_url()).token(token.clone()));

    let mut allowed = client.subscribe(MESSAGES, encode(&RoomFilter { room: mine.clone() }), StartAt::Latest);
    subscribed(&mut allowed).await??;
    let mut denied = client.subscribe(MESSAGES, encode(&RoomFilter { room: theirs.clone() }), StartAt::Earliest);
    let status = subscribed(&mut denied).await?.err().map(|s| s.code());
    assert_eq!(status, Some(Code::PermissionDenied), "subscribing to a room outside the claim");

    let post = client.publish(POST, encode(&message(&theirs, "", "let me in"))).await;
    assert_eq!(post.err().map(|s| s.code()), Some(Code::PermissionDenied), "posting to a room outside the claim");
    let over_grpc = grpc_post(chat.grpc, Some(&token), message(&theirs, "", "let me in")).await?;
    assert_eq!(over_grpc.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied), "the same over gRPC");
    let over_grpc = grpc_subscribe(chat.grpc, Some(&token), &theirs).await?;
    assert_eq!(over_grpc.err().map(|s| s.code()), Some(tonic::Code::PermissionDenied), "subscribing over gRPC");

    let receipt = client.publish(POST, encode(&message(&mine, "", "my room"))).await?;
    let got = tokio::time::timeout(Duration::from_secs(30), allowed.next()).await?.unwrap()?;
    assert_eq!((got.partition, got.offset), (receipt.partition, receipt.offset));
    client.close();
    chat.stop().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_endpoint_takes_sane_names_and_small_bodies() -> anyhow::Result<()> {
    let chat = Chat::start(&[("CHAT_TOKEN_TTL", "2m")]).await?;
    for (content_type, body) in [
        ("application/json", r#"{"user": "  Ada Lovelace "}"#),
        ("application/x-www-form-urlencoded", "user=Ada+Lovelace"),
    ] {
        let (status, text) = chat.post_token(content_type, body.as_bytes()).await?;
        assert_eq!(status, 200, "{body}: {text}");
        let answer: serde_json::Value = serde_json::from_str(&text)?;
        let c = claims(answer["token"].as_str().unwrap())?;
        assert_eq!(c["sub"], "Ada Lovelace");
        assert_eq!((c["iss"].as_str(), c["aud"].as_str()), (Some("kafkasocks-chat"), Some("kafkasocks-chat")));
        assert_eq!(c["rooms"], serde_json::json!(["*"]));
        let exp = c["exp"].as_u64().unwrap();
        assert!(exp.abs_diff(now() + 120) <= 5, "exp is now + CHAT_TOKEN_TTL (2 min): {exp}");
        assert_eq!(answer["expires_at_ms"].as_u64(), Some(exp * 1000));
    }
    let too_long = format!(r#"{{"user": "{}"}}"#, "x".repeat(33));
    for body in [
        r#"{"user": ""}"#,
        r#"{"user": "   "}"#,
        r#"{"user": "<script>"}"#,
        r#"{"user": 7}"#,
        "{",
        "name=ada",
        &too_long,
    ] {
        let (status, text) = chat.post_token("application/json", body.as_bytes()).await?;
        assert_eq!(status, 400, "{body}");
        assert!(serde_json::from_str::<serde_json::Value>(&text)?["error"].is_string(), "a reason: {text}");
    }
    let big = format!(r#"{{"user": "ada", "pad": "{}"}}"#, "x".repeat(2000));
    assert_eq!(chat.post_token("application/json", big.as_bytes()).await?.0, 413);
    assert_eq!(common::http(chat.http, "GET", "/token", "text/plain", b"").await?.0, 405);
    chat.stop().await
}

fn p99(mut latencies: Vec<Duration>) -> f64 {
    latencies.sort();
    latencies[((latencies.len() - 1) as f64 * 0.99).round() as usize].as_secs_f64() * 1000.0
}

/// Slowloris on the example's own ports: 300 connections from 5 other addresses that
/// trickle a request header (the page) or never send the HTTP/2 preface (gRPC). A
/// legitimate page load, token and gRPC call from elsewhere are still served (their p99
/// printed), and both ports cut the slow ones at their timeouts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_and_grpc_ports_survive_a_slowloris() -> anyhow::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let chat = Chat::start(&[]).await?;
    let mut slow = Vec::new();
    for i in 0..300u32 {
        let from = std::net::Ipv4Addr::new(127, 0, 3, 1 + (i % 5) as u8);
        let to = if i % 2 == 0 { chat.http } else { chat.grpc };
        if let Ok(mut s) = connect_from(from, to).await {
            if to == chat.http {
                let _ = s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a").await;
            }
            slow.push((to, s));
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (mut pages, mut calls) = (Vec::new(), Vec::new());
    let token = chat.token("ada").await?;
    let room = unique_room("slow");
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let (status, _) = common::http(chat.http, "GET", "/", "text/plain", b"").await?;
        assert_eq!(status, 200);
        pages.push(started.elapsed());
        let started = std::time::Instant::now();
        grpc_post(chat.grpc, Some(&token), message(&room, "", "during a slowloris")).await??;
        calls.push(started.elapsed());
    }
    println!(
        "chat ports, 300 slowloris connections: page GET p99 {:.1} ms, gRPC Post p99 {:.1} ms",
        p99(pages),
        p99(calls)
    );
    // The page port closes the trickling ones at its header timeout (10 s), the gRPC port
    // the silent ones at its first-bytes timeout (10 s).
    let started = std::time::Instant::now();
    let mut cut = 0;
    for (_, mut s) in slow {
        let mut b = [0u8; 256];
        if let Ok(Ok(_) | Err(_)) = tokio::time::timeout(Duration::from_secs(15), s.read(&mut b)).await {
            cut += 1;
        }
    }
    assert_eq!(cut, 300, "every slow connection is closed");
    println!("the 300 slow connections were closed within {:.1} s", started.elapsed().as_secs_f64());
    chat.stop().await
}
