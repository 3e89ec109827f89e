//! The binary's `[kafka.tls]`, `[kafka.sasl]` and `[server.tls]` against the real secured
//! listeners `scripts/services` starts (SCRAM over TLS with the test CA): a client of the
//! binary publishes over `wss://` and gets Kafka's receipt; a wrong password is reported by
//! `/readyz` with the reason; `[log] format = "json"` writes one JSON object per line.

mod common;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig};

fn secure_dir() -> PathBuf {
    std::env::var("KAFKA_SECURE_DIR").map(PathBuf::from).unwrap_or_else(|_| {
        PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".local/state/kafkasocks/kafka/secure")
    })
}

fn sasl_ssl() -> String {
    std::env::var("KAFKA_SASL_SSL_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19094".into())
}

/// A config for SCRAM-SHA-512 as "writer" (password from `password_file`), served over wss
/// with the broker's test certificate (signed by the test CA, for 127.0.0.1).
fn config(password_file: &std::path::Path, extra: &str) -> String {
    let dir = secure_dir();
    format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n\
         [server.tls]\ncert_chain_file = {:?}\nprivate_key_file = {:?}\n\
         [kafka]\nbootstrap = {:?}\n[kafka.tls]\nca_file = {:?}\n\
         [kafka.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"writer\"\npassword_file = {password_file:?}\n\
         [auth]\nanonymous = true\n[limits]\nreadiness_interval = \"500ms\"\npublish_timeout = \"5s\"\n{}{extra}",
        dir.join("broker.crt"),
        dir.join("broker.key"),
        sasl_ssl(),
        dir.join("ca.crt"),
        common::chat_proto(),
    )
}

fn client(addr: &str) -> Client {
    let ca = std::fs::read(secure_dir().join("ca.crt")).expect("the test CA");
    let port = addr.rsplit(':').next().expect("port");
    let config =
        ClientConfig::new(format!("wss://localhost:{port}/streams")).add_root_certificates_pem(&ca).expect("ca");
    Client::connect(config)
}

async fn readyz(admin: &str) -> (u16, String) {
    let url = format!("{admin}/readyz");
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("curl").args(["-s", "-w", "\n%{http_code}", &url]).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sasl_ssl_kafka_and_wss_from_the_config_file() {
    common::ensure_chat_topic().await;
    let serve = common::serve(&config(&secure_dir().join("writer.password"), ""), Stdio::null());
    let client = client(&serve.addr);
    // A chat message (room "secured"): field 1 room, field 3 text.
    let message = [b"\x0a\x07secured".as_slice(), b"\x1a\x02hi"].concat();
    let receipt = tokio::time::timeout(Duration::from_secs(30), client.publish("chat.v1.ChatStreams/Post", message))
        .await
        .expect("answered")
        .expect("produced over SASL_SSL");
    assert_eq!(receipt.topic, "chat.messages");
    let admin = serve.admin.clone().expect("admin");
    let mut ready = (0, String::new());
    for _ in 0..40 {
        ready = readyz(&admin).await;
        if ready.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(ready.0, 200, "{}", ready.1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_is_reported_by_readyz_and_logs_are_json_lines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong.password");
    std::fs::write(&wrong, "not-the-password").expect("write");
    let mut serve = common::serve(&config(&wrong, "[log]\nformat = \"json\"\n"), Stdio::piped());
    let stderr = serve.child.stderr.take().expect("stderr");
    let lines =
        std::thread::spawn(move || BufReader::new(stderr).lines().map_while(Result::ok).take(3).collect::<Vec<_>>());
    let admin = serve.admin.clone().expect("admin");
    let mut ready = (0, String::new());
    for _ in 0..40 {
        ready = readyz(&admin).await;
        if ready.0 == 503 && ready.1.contains("kafka") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(ready.0, 503, "{}", ready.1);
    assert!(ready.1.to_ascii_lowercase().contains("auth"), "says why: {}", ready.1);
    serve.terminate();
    let lines = lines.join().expect("stderr lines");
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
    }
}
