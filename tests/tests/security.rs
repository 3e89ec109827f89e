//! The browser-facing security of a gateway, tried as an attacker would, against a real
//! gateway on a real broker: failing closed, Origin and Host checks before the upgrade,
//! idempotency keys that cannot cross principals, budgets and caps shared by a principal's
//! connections, token refresh, WebSocket protocol violations, permissions from claims
//! (a randomized property test), and slowloris and connection floods on every port.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafkasocks::wire::{self, frame::Kind};
use kafkasocks::{
    Claims, Code, Gateway, GatewayConfig, Handshake, KafkaConfig, Limits, OriginPolicy, Permissions, Principal, Status,
};
use kafkasocks_tests::{
    PUBLISH, RawClient, SUBSCRIBE, TestGateway, connect_from, create_topic, delete_topic, init_tracing, message,
    raw_upgrade, streams, unique_topic,
};
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test authenticator: the token is `subject` or `subject|{json claims}`; empty or
/// `garbage…` tokens are refused.
fn token_auth(token: &str, _: &Handshake) -> Result<Principal, Status> {
    if token.is_empty() || token.starts_with("garbage") {
        return Err(Status::unauthenticated("bad token"));
    }
    let (subject, claims) = token.split_once('|').unwrap_or((token, "{}"));
    let claims = Claims::from_json(claims).map_err(|e| Status::unauthenticated(e.to_string()))?;
    Ok(Principal::new(subject).with_claims(claims))
}

async fn gateway_with(
    topic: &str,
    config: impl FnOnce(GatewayConfig) -> GatewayConfig,
    build: impl FnOnce(kafkasocks::GatewayBuilder) -> kafkasocks::GatewayBuilder,
) -> anyhow::Result<TestGateway> {
    let base = GatewayConfig::new(KafkaConfig::new(kafkasocks_tests::bootstrap()));
    TestGateway::start_built(config(base), streams(topic), build).await
}

fn publish(id: u64, key: &str, body: &str, idempotency_key: &str) -> Kind {
    Kind::Publish(wire::Publish {
        id,
        method: PUBLISH.into(),
        payload: message(key, body),
        idempotency_key: Bytes::copy_from_slice(idempotency_key.as_bytes()),
        ..Default::default()
    })
}

async fn receipt(c: &mut RawClient) -> anyhow::Result<Result<wire::Receipt, wire::Error>> {
    loop {
        match c.recv().await? {
            Some(Kind::Receipt(r)) => return Ok(Ok(r)),
            Some(Kind::Error(e)) => return Ok(Err(e)),
            _ => {}
        }
    }
}

#[tokio::test]
async fn a_gateway_without_an_authenticator_refuses_to_start() -> anyhow::Result<()> {
    let config = GatewayConfig::new(KafkaConfig::new("127.0.0.1:9")).listen("127.0.0.1:0".parse()?);
    let err = Gateway::builder(config).streams(streams("t")).bind().await.expect_err("must not start open");
    let text = err.to_string();
    assert!(text.contains("authenticator") && text.contains("allow_anonymous"), "{text}");
    Ok(())
}

/// Look-alike origins an attacker can register or a browser can send, for two allowed
/// origins: more than 200 variants, none accepted.
fn origin_variants() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let hosts = [
        "chat.example.com.evil.com",
        "evilchat.example.com",
        "chat-example.com",
        "chatexample.com",
        "chat.example.co",
        "chat.example.com.",
        "xchat.example.com",
        "chat.example.comx",
        "sub.chat.example.com",
        "chat.examp1e.com",
        "chаt.example.com", // Cyrillic а
        "xn--cht-8cd.example.com",
        "CHAT.EXAMPLE.COM",
        "Chat.Example.Com",
        "chat.example.com%2eevil.com",
        "chat%2eexample.com",
        "example.com",
        "com",
        "127.0.0.1",
        "localhost",
        "chat.example.com@evil.com",
        "evil.com#chat.example.com",
        "evil.com?chat.example.com",
        "evil.com\\chat.example.com",
    ];
    for scheme in ["https", "http", "wss", "ws", "HTTPS", "ftp", "file"] {
        for host in hosts {
            out.push(format!("{scheme}://{host}"));
        }
        for port in [":443", ":8443", ":0", ":80", ":65536", ":", ":-1"] {
            out.push(format!("{scheme}://chat.example.com{port}"));
        }
    }
    // The allowed local origin's neighbours.
    for o in [
        "http://127.0.0.1:8081",
        "http://127.0.0.1",
        "http://127.0.0.1:80",
        "https://127.0.0.1:8080",
        "http://localhost:8080",
        "http://127.1:8080",
        "http://0x7f.0.0.1:8080",
        "http://2130706433:8080",
        "http://[::ffff:127.0.0.1]:8080",
        "http://[::1]:8080",
        "http://127.0.0.1:08080",
        "http://127.0.0.1:8080.evil.com",
    ] {
        out.push(o.into());
    }
    // Forms of the allowed origins that are not the one browsers send, and odd values.
    for o in [
        "https://chat.example.com/",
        "https://chat.example.com/path",
        "https://chat.example.com:443",
        "https://chat.example.com\t.evil.com",
        "https://chat.example.com, https://evil.com",
        "https://evil.com, https://chat.example.com",
        "https:/chat.example.com",
        "https:///chat.example.com",
        "//chat.example.com",
        "chat.example.com",
        "https://user:pass@chat.example.com",
        "null",
        "NULL",
        "Null",
        "",
        "*",
        "https://*.example.com",
        "http://127.0.0.1:8080/",
        "HTTP://127.0.0.1:8080",
    ] {
        out.push(o.into());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_outside_the_allowlist_get_403_before_the_upgrade() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sec-origin");
    let origins = OriginPolicy::new().allow("https://chat.example.com").allow("http://127.0.0.1:8080");
    let gw = gateway_with(&topic, |c| c.origins(origins), |b| b.allow_anonymous()).await?;
    for allowed in ["https://chat.example.com", "http://127.0.0.1:8080"] {
        let (status, text) = raw_upgrade(gw.addr, &[("Origin", allowed)]).await?;
        assert_eq!(status, 101, "{allowed}: {text}");
    }
    // Clients that send no Origin (not browsers) are let in by default.
    assert_eq!(raw_upgrade(gw.addr, &[]).await?.0, 101);
    let variants = origin_variants();
    assert!(variants.len() >= 200, "{} variants", variants.len());
    let mut refused = 0;
    for v in &variants {
        let (status, text) = raw_upgrade(gw.addr, &[("Origin", v)]).await?;
        assert_ne!(status, 101, "origin {v:?} was accepted");
        assert_eq!(status, 403, "origin {v:?}: {text}");
        refused += 1;
    }
    // Two Origin headers: refused too (the first one is checked, and it must be allowed).
    let (status, _) =
        raw_upgrade(gw.addr, &[("Origin", "https://evil.com"), ("Origin", "https://chat.example.com")]).await?;
    assert_eq!(status, 403);
    let metrics = gw.metrics_text().await?;
    assert!(
        metrics.contains(&format!("kafkasocks_connections_rejected_total{{reason=\"origin\"}} {}", refused + 1)),
        "{metrics}"
    );
    println!("origin variants refused: {refused}");

    // Browsers only: a missing Origin is refused.
    let strict =
        gateway_with(&topic, |c| c.origins(OriginPolicy::new().refuse_missing()), |b| b.allow_anonymous()).await?;
    assert_eq!(raw_upgrade(strict.addr, &[]).await?.0, 403);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_outside_the_allowlist_get_403_against_dns_rebinding() -> anyhow::Result<()> {
    let topic = unique_topic("sec-host");
    let gw = gateway_with(&topic, |c| c, |b| b.allow_anonymous()).await?;
    let host = gw.addr.to_string();
    let policy = OriginPolicy::new().allow_host(host.clone());
    let strict = gateway_with(&topic, |c| c.origins(policy), |b| b.allow_anonymous()).await?;
    // raw_upgrade sends `Host: <addr>` of the gateway it talks to; the strict gateway
    // allows only the first gateway's address, so its own address is refused.
    let (status, text) = raw_upgrade(strict.addr, &[]).await?;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("is not served here"), "{text}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotency_keys_never_cross_principals_or_anonymous_sessions() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sec-dedup");
    create_topic(&topic, 1).await?;
    // Anonymous: each session's keys are its own.
    let anon = gateway_with(&topic, |c| c, |b| b.allow_anonymous()).await?;
    let mut a = RawClient::open(anon.addr).await?;
    let mut b = RawClient::open(anon.addr).await?;
    a.send(publish(1, "k", "from a", "same-key")).await?;
    let ra = receipt(&mut a).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    b.send(publish(1, "k", "from b", "same-key")).await?;
    let rb = receipt(&mut b).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(!rb.duplicate && rb.offset != ra.offset, "b got a's receipt: {ra:?} {rb:?}");
    assert_eq!(kafkasocks_tests::read_back(&topic, 0, rb.offset).await?.1, message("k", "from b").to_vec());
    // The same session retrying gets its own receipt back.
    a.send(publish(2, "k", "from a", "same-key")).await?;
    let again = receipt(&mut a).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(again.duplicate && again.offset == ra.offset);

    // An anonymous client naming its instance (Hello.instance_id, 128 random bits the
    // client keeps) keeps its keys across reconnects; another instance cannot reach them.
    let open_instance = |instance: &'static str| async move {
        let mut c = RawClient::connect(anon.addr).await?;
        c.send(Kind::Hello(wire::Hello { protocol_version: 1, instance_id: instance.into(), ..Default::default() }))
            .await?;
        anyhow::ensure!(matches!(c.recv().await?, Some(Kind::Welcome(_))));
        anyhow::Ok(c)
    };
    let mine = "0123456789abcdef0123456789abcdef";
    let mut c1 = open_instance(mine).await?;
    c1.send(publish(1, "k", "mine", "instance-key")).await?;
    let r1 = receipt(&mut c1).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    drop(c1);
    let mut c2 = open_instance(mine).await?;
    c2.send(publish(1, "k", "mine", "instance-key")).await?;
    let r2 = receipt(&mut c2).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(r2.duplicate && r2.offset == r1.offset, "the same instance after a reconnect is deduplicated");
    let mut other = open_instance("fedcba9876543210fedcba9876543210").await?;
    other.send(publish(1, "k", "other", "instance-key")).await?;
    let r3 = receipt(&mut other).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(!r3.duplicate && r3.offset != r1.offset, "another instance reached this one's key");
    // Too short to be 128 random bits: scoped to the session instead.
    let mut weak1 = open_instance("short").await?;
    weak1.send(publish(1, "k", "weak", "weak-key")).await?;
    let w1 = receipt(&mut weak1).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let mut weak2 = open_instance("short").await?;
    weak2.send(publish(1, "k", "weak", "weak-key")).await?;
    let w2 = receipt(&mut weak2).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(!w2.duplicate && w2.offset != w1.offset);

    // Authenticated: a principal's keys are its own on every connection, and only its own.
    let authed = gateway_with(&topic, |c| c, |b| b.authenticator(token_auth)).await?;
    let mut ada1 = RawClient::open_with_token(authed.addr, "ada").await?;
    let mut ada2 = RawClient::open_with_token(authed.addr, "ada").await?;
    let mut bob = RawClient::open_with_token(authed.addr, "bob").await?;
    ada1.send(publish(1, "k", "ada", "key-1")).await?;
    let r1 = receipt(&mut ada1).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    ada2.send(publish(1, "k", "ada", "key-1")).await?;
    let r2 = receipt(&mut ada2).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(r2.duplicate && r2.offset == r1.offset, "ada's retry on another connection is deduplicated");
    bob.send(publish(1, "k", "bob", "key-1")).await?;
    let r3 = receipt(&mut bob).await?.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    assert!(!r3.duplicate && r3.offset != r1.offset, "bob's publish was suppressed by ada's key");
    assert_eq!(kafkasocks_tests::read_back(&topic, 0, r3.offset).await?.1, message("k", "bob").to_vec());
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_principals_publish_budget_is_shared_by_its_connections_and_grpc() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sec-budget");
    create_topic(&topic, 1).await?;
    let rate = 40u32;
    let limits = Limits::default().with_max_publishes_per_second_per_principal(rate);
    let gw = gateway_with(&topic, |c| c.limits(limits), |b| b.authenticator(token_auth)).await?;
    let started = Instant::now();
    let mut conns = Vec::new();
    for _ in 0..5 {
        conns.push(RawClient::open_with_token(gw.addr, "mallory").await?);
    }
    // 5 connections x 100 publishes, each within the per-connection limit (1000/s).
    for c in &mut conns {
        for i in 0..100 {
            c.send(publish(i + 1, "k", "x", "")).await?;
        }
    }
    let (mut ok, mut limited) = (0u32, 0u32);
    for c in &mut conns {
        for _ in 0..100 {
            match receipt(c).await? {
                Ok(_) => ok += 1,
                Err(e) => {
                    assert_eq!(e.code, Code::ResourceExhausted.grpc(), "{e:?}");
                    assert!(e.retry_after_ms > 0, "the refusal says when to retry");
                    limited += 1;
                }
            }
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = f64::from(rate) * (1.0 + elapsed) + 1.0;
    println!("500 publishes from 5 connections of one principal in {elapsed:.2}s: {ok} produced, {limited} refused");
    assert!(f64::from(ok) <= allowed, "{ok} produced, the budget allows {allowed:.0}");
    assert!(limited > 0);
    // The in-process (gRPC) path draws from the same budget.
    let mut refused_locally = false;
    for _ in 0..(rate * 2) {
        let r = gw.local.publish(Principal::new("mallory"), PUBLISH, message("k", "grpc"), Bytes::new()).await;
        if r.as_ref().err().map(Status::code) == Some(Code::ResourceExhausted) {
            refused_locally = true;
            break;
        }
    }
    assert!(refused_locally, "gRPC publishes share the principal's budget");
    // Another principal is not affected.
    let mut other = RawClient::open_with_token(gw.addr, "ada").await?;
    other.send(publish(1, "k", "ada", "")).await?;
    assert!(receipt(&mut other).await?.is_ok());
    delete_topic(&topic).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_are_capped_per_address_and_per_principal() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sec-caps");
    let limits = Limits::default().with_max_connections_per_address(3).with_max_connections_per_principal(2);
    let gw = gateway_with(&topic, |c| c.limits(limits), |b| b.authenticator(token_auth)).await?;
    let _a = RawClient::open_with_token(gw.addr, "ada").await?;
    let _b = RawClient::open_with_token(gw.addr, "ada").await?;
    // A third session of ada: refused at Hello with RESOURCE_EXHAUSTED and 4013.
    let mut c = RawClient::connect(gw.addr).await?;
    c.send(Kind::Hello(wire::Hello {
        protocol_version: 1,
        token: "ada".into(),
        client: "t".into(),
        ..Default::default()
    }))
    .await?;
    let (code, frames) = c.until_close().await;
    assert_eq!(code, 4013);
    assert!(
        frames.iter().any(|f| matches!(f, Kind::Error(e) if e.code == Code::ResourceExhausted.grpc())),
        "{frames:?}"
    );
    // That connection's address slot was given back; a fourth from this address is refused
    // before the upgrade.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let _d = RawClient::open_with_token(gw.addr, "bob").await?;
    let (status, text) = raw_upgrade(gw.addr, &[]).await?;
    assert_eq!(status, 503, "{text}");
    assert!(text.contains("from one address"), "{text}");
    // Behind no trusted proxy, a forged X-Forwarded-For changes nothing.
    let (status, _) = raw_upgrade(gw.addr, &[("X-Forwarded-For", "198.51.100.1")]).await?;
    assert_eq!(status, 503);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_and_token_refreshes_are_refused_with_4001() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sec-tokens");
    let gw = gateway_with(&topic, |c| c, |b| b.authenticator(token_auth)).await?;
    for token in ["", "garbage"] {
        let mut c = RawClient::connect(gw.addr).await?;
        c.send(Kind::Hello(wire::Hello {
            protocol_version: 1,
            token: token.into(),
            client: "t".into(),
            ..Default::default()
        }))
        .await?;
        assert_eq!(c.until_close().await.0, 4001, "token {token:?}");
    }
    let mut c = RawClient::open_with_token(gw.addr, "ada").await?;
    c.send(Kind::TokenRefresh(wire::TokenRefresh { token: "ada".into() })).await?;
    assert!(matches!(c.recv().await?, Some(Kind::TokenAccepted(_))));
    c.send(Kind::TokenRefresh(wire::TokenRefresh { token: "garbage".into() })).await?;
    assert_eq!(c.until_close().await.0, 4001);
    // A refresh may not switch the session to another subject.
    let mut c = RawClient::open_with_token(gw.addr, "ada").await?;
    c.send(Kind::TokenRefresh(wire::TokenRefresh { token: "mallory".into() })).await?;
    let (code, frames) = c.until_close().await;
    assert_eq!(code, 4001);
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Kind::Error(e) if e.message.contains("same") || e.message.contains("subject")))
    );
    let metrics = gw.metrics_text().await?;
    // "", "garbage" at Hello and "garbage" at refresh (the other subject's token is valid).
    assert_eq!(kafkasocks_tests::metric(&metrics, "kafkasocks_auth_refusals_total"), 3.0, "{metrics}");
    Ok(())
}

/// A WebSocket frame as a client would write it: FIN/RSV/opcode byte, masked or not.
fn ws_frame(first: u8, payload: &[u8], masked: bool) -> Vec<u8> {
    let mut out = vec![first];
    let mask_bit = if masked { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => out.push(mask_bit | n as u8),
        n if n < 65536 => {
            out.push(mask_bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(mask_bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    if masked {
        let key = [0x37, 0xfa, 0x21, 0x3d];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    } else {
        out.extend_from_slice(payload);
    }
    out
}

/// Opens a raw upgraded connection (Hello/Welcome done), sends `bytes`, returns the close
/// code the gateway sent (0 when none).
async fn close_code_after(addr: SocketAddr, bytes: &[u8]) -> anyhow::Result<u16> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET /streams HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: {}\r\n\r\n",
        kafkasocks::SUBPROTOCOL
    );
    s.write_all(req.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await?;
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 101"));
    let hello = wire::Frame {
        kind: Some(Kind::Hello(wire::Hello {
            protocol_version: 1,
            token: String::new(),
            client: "raw".into(),
            ..Default::default()
        })),
    };
    s.write_all(&ws_frame(0x82, &prost::Message::encode_to_vec(&hello), true)).await?;
    s.write_all(bytes).await?;
    // Read frames until a close frame (opcode 8) or EOF.
    let mut buf = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut chunk = [0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, s.read(&mut chunk)).await {
            Ok(Ok(n)) => n,
            _ => 0,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut at = 0;
        while at + 2 <= buf.len() {
            let opcode = buf[at] & 0x0f;
            let (len, hdr) = match buf[at + 1] & 0x7f {
                126 if at + 4 <= buf.len() => (u16::from_be_bytes([buf[at + 2], buf[at + 3]]) as usize, 4),
                127 if at + 10 <= buf.len() => (u64::from_be_bytes(buf[at + 2..at + 10].try_into()?) as usize, 10),
                126 | 127 => break,
                n => (n as usize, 2),
            };
            if at + hdr + len > buf.len() {
                break;
            }
            if opcode == 8 {
                let body = &buf[at + hdr..at + hdr + len];
                return Ok(if body.len() >= 2 { u16::from_be_bytes([body[0], body[1]]) } else { 1005 });
            }
            at += hdr + len;
        }
        if n == 0 {
            return Ok(0);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_protocol_violations_close_with_1002() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sec-ws");
    let gw = gateway_with(&topic, |c| c, |b| b.allow_anonymous()).await?;
    let ping = wire::Frame { kind: Some(Kind::Ping(wire::Ping { nonce: 1 })) };
    let ping = prost::Message::encode_to_vec(&ping);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an unmasked client frame", ws_frame(0x82, &ping, false)),
        ("RSV1 set without an extension", ws_frame(0x82 | 0x40, &ping, true)),
        ("RSV3 set", ws_frame(0x82 | 0x10, &ping, true)),
        ("reserved data opcode 3", ws_frame(0x83, &ping, true)),
        ("reserved control opcode 0xB", ws_frame(0x8b, b"", true)),
        ("an orphan continuation", ws_frame(0x80, &ping, true)),
        ("a fragmented ping", ws_frame(0x09, b"x", true)),
        ("a control frame over 125 bytes", ws_frame(0x89, &[0u8; 126], true)),
    ];
    for (what, bytes) in cases {
        let code = close_code_after(gw.addr, &bytes).await?;
        assert_eq!(code, 1002, "{what}");
    }
    Ok(())
}

/// The property: whatever the claims and requests, nothing is delivered or produced
/// beyond what the claims grant. Random claims (operations granted, keys pinned) and
/// random subscribes and publishes against a real gateway; the topic is read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_claims_and_requests_never_exceed_the_grant() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sec-prop");
    create_topic(&topic, 1).await?;
    let permissions = Permissions::none().grant_from_claim("perms").pin_keys("test.v1.Records/*", "keys");
    let gw = gateway_with(&topic, |c| c, |b| b.authenticator(token_auth).permissions(permissions)).await?;
    let seed = std::env::var("PROP_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random::<u64>);
    println!("PROP_SEED={seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let perm_pool = [
        "subscribe:test.v1.Records/Watch",
        "publish:test.v1.Records/Put",
        "*:test.v1.*",
        "publish:other.v1/*",
        "read:*",
        "*",
    ];
    let key_pool = ["k1", "k2", "k3", "*"];
    let request_keys = ["k1", "k2", "k3", "k4", ""];
    // What the model says must be in the topic afterwards (body -> key).
    let mut expected_produced: Vec<(String, String)> = Vec::new();
    let mut case_log = Vec::new();
    for case in 0..40 {
        let perms: Vec<&str> = perm_pool.iter().copied().filter(|_| rng.random_bool(0.4)).collect();
        let keys: Vec<&str> = key_pool.iter().copied().filter(|_| rng.random_bool(0.35)).collect();
        let claims = serde_json::json!({ "perms": perms, "keys": keys });
        let subject = format!("p{case}");
        let may_sub = perms.iter().any(|p| matches!(*p, "subscribe:test.v1.Records/Watch" | "*:test.v1.*"));
        let may_pub = perms.iter().any(|p| matches!(*p, "publish:test.v1.Records/Put" | "*:test.v1.*"));
        let key_ok = |k: &str| keys.contains(&"*") || (!k.is_empty() && keys.contains(&k));
        let mut c = RawClient::open_with_token(gw.addr, &format!("{subject}|{claims}")).await?;
        // A subscription from the earliest record, for a random key.
        let sub_key = request_keys[rng.random_range(0..request_keys.len())];
        c.send(Kind::Subscribe(wire::Subscribe {
            id: 1,
            method: SUBSCRIBE.into(),
            request: message(sub_key, ""),
            start: Some(wire::StartPosition {
                position: Some(wire::start_position::Position::Earliest(wire::Empty {})),
            }),
            credit: 0,
        }))
        .await?;
        let sub_allowed = may_sub && key_ok(sub_key);
        // Publishes with random keys.
        let mut pubs = Vec::new();
        for i in 0..3u64 {
            let key = request_keys[rng.random_range(0..request_keys.len())];
            let body = format!("{subject}-{i}");
            c.send(publish(i + 1, key, &body, "")).await?;
            pubs.push((i + 1, key, body));
        }
        // Collect answers: the subscription's verdict, each publish's, and any data.
        let mut sub_verdict: Option<bool> = None;
        let mut pub_verdicts = std::collections::HashMap::new();
        let mut delivered_keys = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while (sub_verdict.is_none() || pub_verdicts.len() < pubs.len()) && tokio::time::Instant::now() < deadline {
            match tokio::time::timeout_at(deadline, c.recv()).await {
                Ok(Ok(Some(Kind::Subscribed(_)))) => sub_verdict = Some(true),
                Ok(Ok(Some(Kind::Error(e)))) if e.subscription_id == 1 => {
                    assert_eq!(e.code, Code::PermissionDenied.grpc(), "{e:?}");
                    sub_verdict = Some(false);
                }
                Ok(Ok(Some(Kind::Error(e)))) if e.publish_id > 0 => {
                    assert_eq!(e.code, Code::PermissionDenied.grpc(), "{e:?}");
                    pub_verdicts.insert(e.publish_id, false);
                }
                Ok(Ok(Some(Kind::Receipt(r)))) => {
                    pub_verdicts.insert(r.id, true);
                }
                Ok(Ok(Some(Kind::Data(d)))) => {
                    delivered_keys.extend(d.records.iter().map(|r| String::from_utf8_lossy(&r.key).into_owned()))
                }
                Ok(Ok(_)) => {}
                other => anyhow::bail!("case {case}: {other:?}"),
            }
        }
        assert_eq!(sub_verdict, Some(sub_allowed), "case {case}: subscribe {sub_key:?} with {claims}");
        for (id, key, body) in &pubs {
            let allowed = may_pub && key_ok(key);
            assert_eq!(pub_verdicts.get(id), Some(&allowed), "case {case}: publish {key:?} with {claims}");
            if allowed {
                expected_produced.push((body.clone(), key.to_string()));
            }
        }
        for k in &delivered_keys {
            assert!(sub_allowed && (sub_key.is_empty() || k == sub_key), "case {case}: delivered key {k:?}");
            assert!(key_ok(k) || keys.contains(&"*"), "case {case}: key {k:?} outside {claims}");
        }
        case_log.push((sub_allowed, pub_verdicts.values().filter(|v| **v).count()));
    }
    // Exactly the granted publishes reached Kafka.
    let mut produced = Vec::new();
    let mut offset = 0;
    while produced.len() < expected_produced.len() {
        let (key, value) = kafkasocks_tests::read_back(&topic, 0, offset).await?;
        produced.push((String::from_utf8_lossy(&value).into_owned(), String::from_utf8_lossy(&key).into_owned()));
        offset += 1;
    }
    assert!(kafkasocks_tests::read_back(&topic, 0, offset).await.is_err(), "a record beyond the granted ones");
    for (body, key) in &expected_produced {
        let payload = String::from_utf8_lossy(&message(key, body)).into_owned();
        assert!(produced.iter().any(|(v, k)| *v == payload && k == key), "{body} missing from the topic");
    }
    let subs = case_log.iter().filter(|c| c.0).count();
    println!("40 cases: {subs} subscriptions granted, {} publishes produced", expected_produced.len());
    delete_topic(&topic).await?;
    Ok(())
}

/// Percentile of durations, in milliseconds.
fn p(latencies: &mut [Duration], q: f64) -> f64 {
    latencies.sort();
    let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
    latencies[i].as_secs_f64() * 1000.0
}

/// Connect, Hello, Welcome: how long a legitimate client waits, `n` times.
async fn legit_latencies(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let c = tokio::time::timeout(Duration::from_secs(10), RawClient::open(addr)).await??;
        out.push(started.elapsed());
        drop(c);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_and_connection_floods_are_bounded_on_every_port() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sec-slow");
    let limits = Limits::default().with_handshake_timeout(Duration::from_secs(2));
    let gw = gateway_with(&topic, |c| c.limits(limits), |b| b.allow_anonymous()).await?;
    let mut quiet = legit_latencies(gw.addr, 30).await?;
    let quiet_p99 = p(&mut quiet, 0.99);

    // Slowloris on the WebSocket port: 600 connections from 10 other addresses (all of
    // 127/8 is loopback), each sending a header a byte at a time.
    let mut attackers = Vec::new();
    for i in 0..600u32 {
        let addr = gw.addr;
        let from = std::net::Ipv4Addr::new(127, 0, 0, 2 + (i % 10) as u8);
        attackers.push(tokio::spawn(async move {
            let Ok(mut s) = connect_from(from, addr).await else { return (false, Duration::ZERO) };
            let started = Instant::now();
            let head = b"GET /streams HTTP/1.1\r\nHost: x\r\nX-Slow: ";
            for b in head.iter().chain(std::iter::repeat(&b'a')) {
                if s.write_all(&[*b]).await.is_err() {
                    return (true, started.elapsed());
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
                if started.elapsed() > Duration::from_secs(20) {
                    return (false, started.elapsed());
                }
            }
            (false, started.elapsed())
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut under_attack = legit_latencies(gw.addr, 30).await?;
    let attack_p99 = p(&mut under_attack, 0.99);
    let mut cut = 0;
    let mut longest = Duration::ZERO;
    for a in attackers {
        let (was_cut, after) = a.await?;
        cut += usize::from(was_cut);
        longest = longest.max(after);
    }
    println!(
        "ws port, 600 slowloris connections: legitimate connect+Hello p99 {attack_p99:.1} ms (quiet {quiet_p99:.1} ms); \
         {cut} attackers cut, the last after {:.1} s",
        longest.as_secs_f64()
    );
    assert_eq!(cut, 600, "every slowloris connection is closed by the gateway");
    assert!(longest < Duration::from_secs(8), "cut within the handshake timeout (+ slack): {longest:?}");

    // One address may hold only its share of the handshakes in progress: of 100 silent
    // connections from one address, those beyond 64 are closed at once.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(connect_from(std::net::Ipv4Addr::new(127, 0, 0, 99), gw.addr).await?);
    }
    // Within 500 ms (the handshake timeout is 2 s): only the refused ones see EOF.
    let reads = held.iter_mut().map(|s| async move {
        let mut b = [0u8; 16];
        matches!(tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await, Ok(Ok(0) | Err(_)))
    });
    let closed_at_once = futures_util::future::join_all(reads).await.into_iter().filter(|c| *c).count();
    assert_eq!(closed_at_once, 36, "the 36 beyond the per-address share of 64 are closed unread");
    drop(held);

    // A connection flood: 1,000 connects from 20 addresses that send nothing and close
    // after 300 ms, within the gateway's pool of handshakes in progress (1,024 by default;
    // beyond it new handshakes are refused until the flood's time is up).
    let flood: Vec<_> = (0..1000u32)
        .map(|i| {
            let addr = gw.addr;
            let from = std::net::Ipv4Addr::new(127, 0, 1, 1 + (i % 20) as u8);
            tokio::spawn(async move {
                if let Ok(s) = connect_from(from, addr).await {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    drop(s);
                }
            })
        })
        .collect();
    let mut flooded = legit_latencies(gw.addr, 30).await?;
    for f in flood {
        f.await?;
    }
    println!("ws port, 1,000-connection flood: legitimate connect+Hello p99 {:.1} ms", p(&mut flooded, 0.99));

    // Slowloris on the metrics port from 5 other addresses: each gets its share (8 of the
    // 64 slots), the rest are closed at once; a scrape from elsewhere is answered at once.
    let metrics_addr = gw.metrics.expect("metrics listener");
    let mut slow = Vec::new();
    for i in 0..200u32 {
        if let Ok(mut s) = connect_from(std::net::Ipv4Addr::new(127, 0, 2, 1 + (i % 5) as u8), metrics_addr).await {
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n").await;
            slow.push(s);
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut scrapes = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let (status, _) = kafkasocks_tests::http_get(metrics_addr, "/metrics").await?;
        assert_eq!(status, 200);
        scrapes.push(started.elapsed());
    }
    println!("metrics port, 200 slowloris connections: /metrics p99 {:.1} ms", p(&mut scrapes, 0.99));
    let mut closed = 0;
    for mut s in slow {
        let mut b = [0u8; 512];
        if matches!(tokio::time::timeout(Duration::from_secs(10), s.read(&mut b)).await, Ok(Ok(_)) | Ok(Err(_))) {
            closed += 1;
        }
    }
    assert_eq!(closed, 200, "slow metrics clients are answered or closed within the header timeout");
    Ok(())
}
