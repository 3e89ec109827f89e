//! Schema Registry interop with an implementation we did not write: Confluent's own
//! Protobuf serdes (confluent-kafka from PyPI, driven through
//! tests/registry-interop/confluent_io.py), against the real registry and broker, in both
//! directions, and byte for byte.
//!
//! Apicurio limits one thing here. A registry-aware `ProtobufDeserializer` asks for each
//! schema with `format=serialized`, and Apicurio 3.3.3 answers that unusably: for schemas
//! registered as `.proto` text (as the gateway registers) with the raw descriptor bytes
//! mangled into a JSON string (not base64), and for the base64 descriptors Confluent's own
//! serializer registers with an HTTP 500. So the consumer runs with `--descriptors local`:
//! it still looks up every schema in the registry by id and every reference by subject and
//! version, and walks the message indexes the records carry, but compiles the registered
//! text itself (protoc), as Confluent's registry would have served it. That keeps the
//! assertion whole: what the gateway registered is enough, from the registry alone, to
//! rebuild and decode its records.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use kafkasocks::{GatewayConfig, KafkaConfig, KeyField, Principal, RecordTypes, RegistrySchema, SchemaReference};
use kafkasocks::{StartAt, Streams};
use kafkasocks_tests::*;
use prost::Message as _;
use serde_json::{Value, json};

const READING_PROTO: &str = include_str!("../registry-interop/proto/interop/v1/reading.proto");
const COMMON_PROTO: &str = include_str!("../registry-interop/proto/interop/v1/common.proto");
const OPTIONS_PROTO: &str = include_str!("../../proto/kafkasocks/options.proto");

#[derive(Clone, PartialEq, prost::Message)]
struct Timestamp {
    #[prost(int64, tag = "1")]
    seconds: i64,
    #[prost(int32, tag = "2")]
    nanos: i32,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Location {
    #[prost(double, tag = "1")]
    lat: f64,
    #[prost(double, tag = "2")]
    lon: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Source {
    #[prost(string, tag = "1")]
    id: String,
    #[prost(message, optional, tag = "2")]
    location: Option<Location>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(string, tag = "1")]
    channel: String,
    #[prost(double, tag = "2")]
    value: f64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Reading {
    #[prost(message, optional, tag = "1")]
    source: Option<Source>,
    #[prost(message, optional, tag = "2")]
    at: Option<Timestamp>,
    #[prost(message, repeated, tag = "3")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Command {
    #[prost(string, tag = "1")]
    source_id: String,
    #[prost(uint32, tag = "2")]
    sampling_ms: u32,
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The virtualenv's python, made (or found) by scripts/python-interop, once per run.
fn python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let out = std::process::Command::new(repo().join("scripts/python-interop"))
            .stderr(std::process::Stdio::inherit())
            .output()
            .expect("running scripts/python-interop");
        assert!(out.status.success(), "scripts/python-interop failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Runs confluent_io.py with `args` (and `stdin`), returning its JSON lines.
async fn confluent(args: &[&str], stdin: &str) -> anyhow::Result<Vec<Value>> {
    use tokio::io::AsyncWriteExt;
    let dir = repo().join("tests/registry-interop");
    let mut child = tokio::process::Command::new(python())
        .arg(dir.join("confluent_io.py"))
        .args(["--bootstrap", &bootstrap(), "--registry", &registry_url()])
        .args(["--proto-path", dir.join("proto").to_str().unwrap()])
        .args(["--proto-path", repo().join("proto").to_str().unwrap()])
        .args(["--proto", "interop/v1/reading.proto"])
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await?;
    drop(input);
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output()).await??;
    anyhow::ensure!(
        out.status.success(),
        "confluent_io.py {args:?} failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)?.lines().map(|l| Ok(serde_json::from_str(l)?)).collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The record schema as generated code registers it: reading.proto verbatim (service and
/// stream options included), its project imports as references, the well-known one not.
fn reading_schema(record: &str, indexes: Vec<i32>) -> RegistrySchema {
    RegistrySchema::protobuf(record, READING_PROTO, indexes)
        .reference(SchemaReference::new("interop/v1/common.proto", "interop/v1/common.proto", COMMON_PROTO))
        .reference(SchemaReference::new("kafkasocks/options.proto", "kafkasocks/options.proto", OPTIONS_PROTO))
}

/// Records the gateway publishes (a message importing two files and a well-known type, and
/// a nested message) are read by Confluent's ProtobufDeserializer through the registry,
/// with the values the gateway was given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confluents_deserializer_reads_what_the_gateway_publishes() -> anyhow::Result<()> {
    init_tracing();
    let (readings, samples) = (unique_topic("interop-readings"), unique_topic("interop-samples"));
    create_topic(&readings, 1).await?;
    create_topic(&samples, 1).await?;
    let streams = Streams::new()
        .publish_with_schema(
            "interop.v1.Telemetry/Record",
            &readings,
            KeyField::none(),
            reading_schema("interop.v1.Reading", vec![0]),
        )
        .publish_with_schema(
            "interop.v1.Telemetry/Sample",
            &samples,
            KeyField::none(),
            reading_schema("interop.v1.Reading.Sample", vec![0, 0]),
        );
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let reading = Reading {
        source: Some(Source { id: "s-1".into(), location: Some(Location { lat: 52.5, lon: 13.25 }) }),
        at: Some(Timestamp { seconds: 1_800_000_000, nanos: 0 }),
        samples: vec![Sample { channel: "temp".into(), value: 21.5 }, Sample { channel: "hum".into(), value: 0.25 }],
    };
    let sample = Sample { channel: "co2".into(), value: 412.0 };
    let publish = |method: &'static str, payload: Vec<u8>| {
        gw.local.publish(Principal::new("t"), method, payload.into(), bytes::Bytes::new())
    };
    let r1 = publish("interop.v1.Telemetry/Record", reading.encode_to_vec()).await?;
    let r2 = publish("interop.v1.Telemetry/Sample", sample.encode_to_vec()).await?;

    let got = confluent(
        &["consume", "--topic", &readings, "--type", "interop.v1.Reading", "--count", "1", "--descriptors", "local"],
        "",
    )
    .await?;
    assert_eq!(got.len(), 1);
    assert_eq!((got[0]["offset"].as_i64(), got[0]["type"].as_str()), (Some(r1.offset), Some("interop.v1.Reading")));
    assert_eq!(got[0]["indexes"], json!([0]));
    assert_eq!(
        got[0]["value"],
        json!({
            "source": { "id": "s-1", "location": { "lat": 52.5, "lon": 13.25 } },
            "at": "2027-01-15T08:00:00Z",
            "samples": [{ "channel": "temp", "value": 21.5 }, { "channel": "hum", "value": 0.25 }],
        })
    );
    let got = confluent(
        &[
            "consume",
            "--topic",
            &samples,
            "--type",
            "interop.v1.Reading.Sample",
            "--count",
            "1",
            "--descriptors",
            "local",
        ],
        "",
    )
    .await?;
    assert_eq!(
        (got[0]["offset"].as_i64(), got[0]["type"].as_str()),
        (Some(r2.offset), Some("interop.v1.Reading.Sample"))
    );
    assert_eq!(got[0]["indexes"], json!([0, 0]));
    assert_eq!(got[0]["value"], json!({ "channel": "co2", "value": 412.0 }));
    gw.shutdown.shutdown();
    delete_topic(&readings).await?;
    delete_topic(&samples).await?;
    Ok(())
}

/// Records Confluent's ProtobufSerializer writes (two record types on one topic, under
/// RecordNameStrategy; one nested) reach a KafkaSocks client with their values and type
/// names; and the gateway's own framing of the same message is byte for byte Confluent's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_reads_what_confluents_serializer_writes_and_frames_alike() -> anyhow::Result<()> {
    init_tracing();
    let (events, ours) = (unique_topic("interop-events"), unique_topic("interop-ours"));
    create_topic(&events, 1).await?;
    create_topic(&ours, 1).await?;
    let lines = [
        json!({ "type": "interop.v1.Reading.Sample", "key": "s-1", "value": { "channel": "temp", "value": 21.5 } }),
        json!({ "type": "interop.v1.Command", "key": "s-1", "value": { "sourceId": "s-1", "samplingMs": 250 } }),
        json!({ "type": "interop.v1.Reading.Sample", "key": "s-2", "value": { "channel": "hum", "value": 0.5 } }),
    ];
    let stdin: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let produced = confluent(&["produce", "--topic", &events, "--strategy", "record"], &stdin).await?;
    assert_eq!(produced.len(), 3);

    let streams = Streams::new()
        .subscribe_with_types(
            "interop.v1.Telemetry/Events",
            &events,
            KeyField::none(),
            RecordTypes::new().member("interop.v1.Reading.Sample", 1).member("interop.v1.Command", 2),
        )
        .publish_with_schema(
            "interop.v1.Telemetry/Command",
            &ours,
            KeyField::none(),
            reading_schema("interop.v1.Command", vec![1]),
        )
        .publish_with_schema(
            "interop.v1.Telemetry/Sample",
            &ours,
            KeyField::none(),
            reading_schema("interop.v1.Reading.Sample", vec![0, 0]),
        );
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let mut sub =
        gw.local.subscribe(Principal::new("t"), "interop.v1.Telemetry/Events", &[], StartAt::Earliest).await?;
    let got = [next_local(&mut sub).await?, next_local(&mut sub).await?, next_local(&mut sub).await?];

    let expect_sample = |d: &kafkasocks::Delivery, channel: &str, value: f64| {
        assert_eq!(d.type_name, "interop.v1.Reading.Sample");
        assert_eq!(d.message_indexes, [0, 0]);
        let (field, inner) = member(&d.payload);
        assert_eq!(field, 1);
        assert_eq!(Sample::decode(&inner[..]).unwrap(), Sample { channel: channel.into(), value });
    };
    expect_sample(&got[0], "temp", 21.5);
    expect_sample(&got[2], "hum", 0.5);
    assert_eq!(got[1].type_name, "interop.v1.Command");
    assert_eq!(got[1].message_indexes, [1]);
    let (field, inner) = member(&got[1].payload);
    assert_eq!(field, 2);
    let command = Command { source_id: "s-1".into(), sampling_ms: 250 };
    assert_eq!(Command::decode(&inner[..]).unwrap(), command);
    for (d, p) in got.iter().zip(&produced) {
        assert_eq!(Some(d.offset), p["offset"].as_i64());
        assert_eq!(Some(u64::from(d.schema_id)), p["schema_id"].as_u64(), "the id Confluent's serializer wrote");
        assert_eq!(&d.key[..], lines[d.offset as usize]["key"].as_str().unwrap().as_bytes());
    }

    // Byte level: Confluent's framing, as read from Kafka, is what its serializer reported;
    // the gateway's framing of the same messages is the same bytes but for the schema id:
    // [1] (a second top-level message) and [0, 0] (a nested one).
    let cases = [
        (1, "interop.v1.Telemetry/Command", command.encode_to_vec(), "0202"),
        (0, "interop.v1.Telemetry/Sample", Sample { channel: "temp".into(), value: 21.5 }.encode_to_vec(), "040000"),
    ];
    for (i, method, message, indexes) in cases {
        let confluent_bytes = read_back(&events, 0, got[i].offset).await?.1;
        assert_eq!(hex(&confluent_bytes), produced[i]["value_hex"].as_str().unwrap());
        assert_eq!(hex(&confluent_bytes[5..5 + indexes.len() / 2]), indexes, "{method}: Confluent's message indexes");
        let receipt = gw.local.publish(Principal::new("t"), method, message.into(), bytes::Bytes::new()).await?;
        let our_bytes = read_back(&ours, receipt.partition, receipt.offset).await?.1;
        assert_eq!((our_bytes[0], confluent_bytes[0]), (0, 0), "magic bytes");
        assert_eq!(hex(&our_bytes[5..]), hex(&confluent_bytes[5..]), "{method}: indexes and message alike");
    }
    gw.shutdown.shutdown();
    delete_topic(&events).await?;
    delete_topic(&ours).await?;
    Ok(())
}

/// Protobuf keys, both ways: records Confluent's serializer keys with a `SourceKey`
/// message reach a key-filtered KafkaSocks stream by the key's value; keys the gateway
/// writes are read by Confluent's deserializer as that message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protobuf_keys_fit_confluents_key_serdes_both_ways() -> anyhow::Result<()> {
    use kafkasocks::KeyMessage;
    init_tracing();
    let topic = unique_topic("interop-keys");
    create_topic(&topic, 1).await?;
    let lines = [
        json!({ "type": "interop.v1.Command", "key_type": "interop.v1.SourceKey", "key": { "sourceId": "s-1" },
                "value": { "sourceId": "s-1", "samplingMs": 250 } }),
        json!({ "type": "interop.v1.Command", "key_type": "interop.v1.SourceKey", "key": { "sourceId": "s-2" },
                "value": { "sourceId": "s-2", "samplingMs": 500 } }),
    ];
    let stdin: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let produced = confluent(&["produce", "--topic", &topic], &stdin).await?;

    // SourceKey is the fifth top-level message of reading.proto: [4].
    let key = || KeyMessage::new(reading_schema("interop.v1.SourceKey", vec![4]), 1);
    let streams = Streams::new()
        .subscribe("interop.v1.Telemetry/BySource", &topic, KeyField::new(1))
        .key_message("interop.v1.Telemetry/BySource", key())
        .publish_with_schema(
            "interop.v1.Telemetry/Command",
            &topic,
            KeyField::new(1),
            reading_schema("interop.v1.Command", vec![1]),
        )
        .key_message("interop.v1.Telemetry/Command", key());
    let config = GatewayConfig::new(KafkaConfig::new(bootstrap())).schema_registry(registry_url());
    let gw = TestGateway::start_with(config, streams, None).await?;
    let filter = SourceFilterMsg { source_id: "s-2".into() }.encode_to_vec();
    let mut sub =
        gw.local.subscribe(Principal::new("t"), "interop.v1.Telemetry/BySource", &filter, StartAt::Earliest).await?;
    let d = next_local(&mut sub).await?;
    assert_eq!(
        (d.offset, &d.key[..]),
        (produced[1]["offset"].as_i64().unwrap(), &b"s-2"[..]),
        "only s-2, by its value"
    );
    assert_eq!(Some(u64::from(d.key_schema_id)), produced[1]["key_schema_id"].as_u64());
    assert_eq!(Command::decode(&d.payload[..])?, Command { source_id: "s-2".into(), sampling_ms: 500 });

    let command = Command { source_id: "s-3".into(), sampling_ms: 750 };
    let receipt = gw
        .local
        .publish(
            Principal::new("t"),
            "interop.v1.Telemetry/Command",
            command.encode_to_vec().into(),
            bytes::Bytes::new(),
        )
        .await?;
    let got = confluent(
        &[
            "consume",
            "--topic",
            &topic,
            "--type",
            "interop.v1.Command",
            "--key-type",
            "interop.v1.SourceKey",
            "--count",
            "3",
            "--descriptors",
            "local",
        ],
        "",
    )
    .await?;
    let ours = got.iter().find(|r| r["offset"].as_i64() == Some(receipt.offset)).expect("the gateway's record");
    assert_eq!(ours["key"], json!({ "source_id": "s-3" }));
    assert_eq!(ours["key_indexes"], json!([4]));
    assert_eq!(ours["value"], json!({ "source_id": "s-3", "sampling_ms": 750 }));
    gw.shutdown.shutdown();
    delete_topic(&topic).await?;
    Ok(())
}

/// `interop.v1.SourceFilter`, the request of a subscription by source.
#[derive(Clone, PartialEq, prost::Message)]
struct SourceFilterMsg {
    #[prost(string, tag = "1")]
    source_id: String,
}
