//! The chat example pointed at a secured Kafka by environment variables alone (as its
//! README shows): the local broker's SASL_SSL listener, user "writer" with SCRAM-SHA-512.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{Chat, RoomFilter, encode, message, unique_room};
use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks_tests::{create_topic, read_back, sasl_ssl_bootstrap, secure_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_chat_runs_on_sasl_ssl_configured_by_environment_variables() -> anyhow::Result<()> {
    // The gateway's principal may not create topics (production gateways seldom may):
    // the topic is made beforehand, on the plaintext listener.
    if let Err(e) = create_topic("chat.messages", 3).await {
        anyhow::ensure!(e.to_string().contains("already exists"), "creating chat.messages: {e}");
    }
    let dir = secure_dir();
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_chat-gateway"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("KAFKA_BOOTSTRAP", sasl_ssl_bootstrap())
        .env("KAFKA_TLS_CA_FILE", dir.join("ca.crt"))
        .env("KAFKA_SASL_MECHANISM", "SCRAM-SHA-512")
        .env("KAFKA_SASL_USERNAME", "writer")
        .env("KAFKA_SASL_PASSWORD_FILE", dir.join("writer.password"));
    let chat = Chat::spawn(cmd).await?;

    let token = chat.token("ada").await?;
    let client = Client::connect(ClientConfig::new(chat.ws_url()).token(token));
    let room = unique_room("secure");
    let mut sub =
        client.subscribe("chat.v1.ChatStreams/Messages", encode(&RoomFilter { room: room.clone() }), StartAt::Latest);
    tokio::time::timeout(Duration::from_secs(30), async {
        while sub.cursor().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await?;
    let post = encode(&message(&room, "ada", "over SASL_SSL"));
    let receipt =
        tokio::time::timeout(Duration::from_secs(30), client.publish("chat.v1.ChatStreams/Post", post)).await??;
    assert_eq!(receipt.topic, "chat.messages");
    let got = tokio::time::timeout(Duration::from_secs(30), sub.next()).await?.unwrap()?;
    assert_eq!((got.partition, got.offset), (receipt.partition, receipt.offset));
    let (key, _) = read_back("chat.messages", receipt.partition, receipt.offset).await?;
    assert_eq!(key, room.as_bytes());
    client.close();
    chat.stop().await?;
    Ok(())
}
