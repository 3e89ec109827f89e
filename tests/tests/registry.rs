//! Confluent Schema Registry framing against the real (Apicurio) registry.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use kafkasocks::client::{Client, ClientConfig, StartAt};
use kafkasocks::{GatewayConfig, KafkaConfig, KeyField, RegistrySchema, Streams};
use kafkasocks_tests::*;

fn registry_url() -> String {
    std::env::var("SCHEMA_REGISTRY_URL").unwrap_or_else(|_| "http://127.0.0.1:18081/apis/ccompat/v7".into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_are_framed_with_the_registered_schema_and_subscribers_get_plain_messages() -> anyhow::Result<()> {
    init_tracing();
    let topic = unique_topic("sr");
    create_topic(&topic, 1).await?;
    let schema_text = format!(
        "syntax = \"proto3\";\npackage test.v1;\nmessage Rec{} {{ string key = 1; string body = 2; }}\n",
        rand::random::<u32>()
    );
    let subject = format!("{topic}-value");
    let streams = Streams::new().subscribe(SUBSCRIBE, &topic, KeyField::new(1)).publish_with_schema(
        PUBLISH,
        &topic,
        KeyField::new(1),
        RegistrySchema::protobuf(&subject, &schema_text, vec![0]),
    );
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let client = Client::connect(ClientConfig::new(gw.url()));
    let mut sub = client.subscribe(SUBSCRIBE, message("", ""), StartAt::Earliest);
    let receipt = client.publish(PUBLISH, message("a", "hello")).await?;

    // In Kafka: 0x00, the schema id, message index [0], then the message.
    let (_, value) = read_back(&topic, receipt.partition, receipt.offset).await?;
    assert_eq!(value[0], 0, "magic byte");
    let id = u32::from_be_bytes([value[1], value[2], value[3], value[4]]);
    assert_eq!(value[5], 0, "message indexes [0]");
    assert_eq!(&value[6..], &message("a", "hello")[..]);
    // The registry knows that id as our schema under our subject.
    let url = registry_url();
    let base = url.strip_prefix("http://").unwrap();
    let (host, path) = base.split_once('/').unwrap();
    let (status, body) = http_get(host.parse()?, &format!("/{path}/schemas/ids/{id}")).await?;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("PROTOBUF") || body.contains("Rec"), "{body}");
    let (status, body) = http_get(host.parse()?, &format!("/{path}/subjects")).await?;
    assert_eq!(status, 200);
    assert!(body.contains(&subject), "{body}");

    // Subscribers get the message without the framing, and the schema id beside it.
    let d = tokio::time::timeout(Duration::from_secs(10), sub.next()).await?.unwrap()?;
    assert_eq!(&d.payload[..], &message("a", "hello")[..]);
    assert_eq!(d.schema_id, id);
    client.close();
    delete_topic(&topic).await?;
    Ok(())
}
