//! The chat example pointed at a secured Kafka by environment variables alone (as its
//! README shows): the local broker's SASL_SSL listener, user "writer" with SCRAM-SHA-512.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks_tests::{create_topic, read_back, sasl_ssl_bootstrap, secure_dir};
use tokio::io::{AsyncBufReadExt, BufReader};

/// A protobuf string field.
fn field(number: u8, value: &str) -> Vec<u8> {
    let mut out = vec![number << 3 | 2, value.len() as u8];
    out.extend_from_slice(value.as_bytes());
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_runs_on_sasl_ssl_configured_by_environment_variables() -> anyhow::Result<()> {
    // The gateway's principal may not create topics (production gateways seldom may):
    // the topic is made beforehand, on the plaintext listener.
    if let Err(e) = create_topic("chat.messages", 3).await {
        anyhow::ensure!(e.to_string().contains("already exists"), "creating chat.messages: {e}");
    }
    let dir = secure_dir();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-gateway"))
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KAFKA_BOOTSTRAP", sasl_ssl_bootstrap())
        .env("KAFKA_TLS_CA_FILE", dir.join("ca.crt"))
        .env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        .env("KAFKA_SASL_USERNAME", "writer")
        .env("KAFKA_SASL_PASSWORD_FILE", dir.join("writer.password"))
        .env("CHAT_WS_ADDR", "127.0.0.1:0")
        .env("CHAT_HTTP_ADDR", "127.0.0.1:0")
        .env("CHAT_GRPC_ADDR", "127.0.0.1:0")
        .env("CHAT_METRICS_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Log lines go to stdout too: the address line starts with "chat: open".
    let line = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(l) = lines.next_line().await? {
            if l.starts_with("chat: open") {
                return Ok(l);
            }
        }
        Ok::<_, std::io::Error>(String::new())
    })
    .await??;
    // Keep reading its output, so that it never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let ws = line.split("?ws=").nth(1).and_then(|r| r.split_whitespace().next()).unwrap_or_default().to_owned();
    anyhow::ensure!(!ws.is_empty(), "no address line from chat-gateway: {line:?}");

    let client = Client::connect(ClientConfig::new(format!("ws://{ws}/streams")));
    let room = format!("secure-{:08x}", rand_suffix());
    let mut sub = client.subscribe("chat.v1.ChatStreams/Messages", field(1, &room), StartAt::Latest);
    while sub.cursor().is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let post = [field(1, &room), field(2, "ada"), field(3, "over SASL_SSL")].concat();
    let receipt =
        tokio::time::timeout(Duration::from_secs(30), client.publish("chat.v1.ChatStreams/Post", post)).await??;
    assert_eq!(receipt.topic, "chat.messages");
    let got = tokio::time::timeout(Duration::from_secs(30), sub.next()).await?.unwrap()?;
    assert_eq!((got.partition, got.offset), (receipt.partition, receipt.offset));
    let (key, _) = read_back("chat.messages", receipt.partition, receipt.offset).await?;
    assert_eq!(key, room.as_bytes());
    client.close();
    child.kill().await?;
    Ok(())
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos())
}
