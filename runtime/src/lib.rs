//! # KafkaSocks
//!
//! Stream Kafka topics to and from browsers over WebSockets, typed end to end, losing
//! nothing. This crate is the gateway runtime: it serves `ws://` and `wss://`, bridges
//! to Kafka with one shared reader per topic, resumes clients from their Kafka offsets
//! with no gap and no duplicate, answers publishes with Kafka receipts, and bounds
//! every resource. The wire protocol is specified in `docs/protocol.md`.
//!
//! # Example
//!
//! A gateway with a subscribe stream and a publish stream on one topic, and a client of it
//! (here the crate's Rust client; a browser uses the generated TypeScript one). This runs as
//! a doc test against the Kafka of `KAFKA_BOOTSTRAP` (default `127.0.0.1:19092`, what
//! `scripts/services up` starts):
//!
//! ```
//! use kafkasocks::client::{Client, ClientConfig};
//! use kafkasocks::{Gateway, GatewayConfig, KafkaConfig, KeyField, StartAt, Streams};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let topic = format!("doc-example-{:x}", std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_nanos());
//! # {
//! #     use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
//! #     let bootstrap = std::env::var("KAFKA_BOOTSTRAP").unwrap_or_else(|_| "127.0.0.1:19092".into());
//! #     let admin: AdminClient<_> = rdkafka::ClientConfig::new().set("bootstrap.servers", bootstrap).create()?;
//! #     let created = admin.create_topics(&[NewTopic::new(&topic, 1, TopicReplication::Fixed(1))], &AdminOptions::new()).await?;
//! #     created.into_iter().collect::<Result<Vec<_>, _>>().map_err(|(t, e)| format!("creating {t}: {e}"))?;
//! # }
//! let streams = Streams::new()
//!     // server streaming: every record of the topic whose key is field 1 of the request
//!     .subscribe("chat.v1.ChatStreams/Messages", &topic, KeyField::new(1))
//!     // unary: produce the request, keyed by its field 1, answer with the Kafka receipt
//!     .publish("chat.v1.ChatStreams/Post", &topic, KeyField::new(1));
//! let config = GatewayConfig::new(KafkaConfig::from_env()?).listen("127.0.0.1:0".parse()?);
//! // Who may connect: here anyone, on purpose (see `JwtAuthenticator`, docs/security.md).
//! let gateway = Gateway::builder(config).streams(streams).allow_anonymous().bind().await?;
//! let url = format!("ws://{}/streams", gateway.local_addr());
//! let stop = gateway.shutdown_handle();
//! let serving = tokio::spawn(gateway.run());
//!
//! let client = Client::connect(ClientConfig::new(url));
//! let room = b"\x0a\x07general".to_vec(); // field 1 = "general", in protobuf
//! let mut messages = client.subscribe("chat.v1.ChatStreams/Messages", room.clone(), StartAt::Earliest);
//! let receipt = client.publish("chat.v1.ChatStreams/Post", [room, b"\x12\x02hi".to_vec()].concat()).await?;
//! let record = messages.next().await.ok_or("the subscription ended")??;
//! assert_eq!((record.partition, record.offset), (receipt.partition, receipt.offset));
//! assert_eq!(&record.key[..], b"general");
//!
//! stop.shutdown(); // GoAway to the client, then close once its publishes are answered
//! serving.await??;
//! # Ok(()) }
//! ```
//!
//! # Feature flags
//!
//! | feature | default | what it adds |
//! |---|---|---|
//! | `server` | yes | the gateway: [`Gateway`], [`Streams`], [`LocalStreams`], Kafka (librdkafka), metrics and health over HTTP |
//! | `tls` | yes | `wss://` for the gateway and the client (rustls with the ring provider) |
//! | `registry` | yes | Confluent Schema Registry: schema publish streams, typed streams (with `server`), [`check_schema`] |
//! | `jwt` | yes | [`JwtAuthenticator`]: JWTs checked against PEM or JWK keys or a JWKS URL |
//! | `axum` | no | `kafkasocks::axum`: the gateway's WebSocket endpoint and admin answers as routes of an axum 0.8 router, on its port |
//! | `opentelemetry` | no | a `kafkasocks.publish` span per publish, child of the client's W3C `traceparent`, its context written to the record's `traceparent` header (install a `tracing_opentelemetry` layer to export it) |
//! | `config` | no | serde and schemars for [`Limits`]: read from configuration files and described (the `kafkasocks` binary) |
//! | `conformance-echo` | no | test-only: an echo endpoint for the Autobahn WebSocket suite |
//! | `client` | yes | [`client::Client`], a Rust client with reconnection and resume (no librdkafka) |
//!
//! `cargo build -p kafkasocks --no-default-features --features client` builds the client
//! alone, without librdkafka, hyper or the registry client.
//!
//! # Design
//!
//! The crate is layered; each layer imports only the ones below it (docs/design.md has the
//! picture):
//!
//! 1. [`protocol`]: the wire frames and the domain types ([`Cursor`], [`StartAt`],
//!    [`Receipt`], [`Delivery`], [`Status`], [`Code`]), one type per concept;
//! 2. `kafka`: a leaf over librdkafka (producer, readers, metadata) that knows nothing of
//!    subscribers;
//! 3. `fanout`: per topic one live reader feeding every subscriber through a key index,
//!    each record encoded once; a replay ring and shared history readers for resumes; a
//!    bounded send queue per connection that the fan-out never waits on;
//! 4. `session`: the protocol's session state machine, publishes with their dedup window
//!    and rate limit, and [`LocalStreams`];
//! 5. `server`: the listener, TLS, the handshake, the admin endpoint, shutdown.
//!
//! [`client`] sits beside them on [`protocol`] only.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod protocol;

#[cfg(feature = "client")]
pub mod client;

#[cfg(feature = "server")]
mod auth;
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod codegen;
#[cfg(feature = "server")]
mod config;
#[cfg(feature = "server")]
mod fanout;
#[cfg(feature = "server")]
mod kafka;
#[cfg(feature = "server")]
mod metrics;
#[cfg(any(feature = "server", feature = "registry"))]
mod registry;
#[cfg(any(feature = "server", feature = "registry"))]
mod secret;
#[cfg(feature = "server")]
mod server;
#[cfg(feature = "server")]
mod session;
#[cfg(feature = "server")]
mod stream;

pub use error::{BoxError, Error};
pub use protocol::{
    Code, Cursor, CursorError, Delivery, Discontinuity, OutgoingRecord, Receipt, RecordView, SUBPROTOCOL, StartAt,
    Status, wire,
};

#[cfg(feature = "jwt")]
pub use auth::jwt::{JwtAlgorithm, JwtAuthenticator, JwtConfig};
#[cfg(feature = "server")]
pub use auth::{
    AuthFuture, Authenticator, Claims, ClaimsError, Handshake, Operation, Permissions, Principal, Transport,
};
#[cfg(feature = "server")]
pub use config::{GatewayConfig, Limits, OriginPolicy, TlsConfig};
#[cfg(feature = "server")]
pub use kafka::cluster::ClusterConfig;
#[cfg(feature = "server")]
pub use kafka::config::{KafkaConfig, KafkaTls, Partitioner, Sasl};
#[cfg(any(feature = "server", feature = "registry"))]
pub use registry::{
    KeyMessage, OtherTypes, RecordTypes, RegistryConfig, RegistryCredentials, RegistryMode, RegistrySchema,
    SchemaReference, SubjectNameStrategy,
};
#[cfg(feature = "registry")]
pub use registry::{SchemaCheck, check_schema};
#[cfg(any(feature = "server", feature = "registry"))]
pub use secret::Secret;
#[cfg(feature = "axum")]
pub use server::axum;
#[cfg(feature = "server")]
pub use server::{Admission, Gateway, GatewayBuilder, GatewayService, Refusal, ShutdownHandle};
#[cfg(feature = "server")]
pub use session::local::{LocalStreams, RecordStream};
#[cfg(feature = "server")]
pub use stream::{
    BoxFuture, KeyField, PublishHook, RecordFilter, RequestContext, Streams, SubscribeHook, SubscriptionPlan,
};

/// One type per concept: the client, the in-process streams and generated code speak the
/// protocol's domain types, not copies of them (this only compiles while that holds).
#[cfg(all(test, feature = "server", feature = "client"))]
#[allow(dead_code)]
fn one_type_per_concept(
    receipt: client::Receipt,
    start: client::StartAt,
    delivery: client::Delivery,
    cursor: client::Cursor,
) -> (codegen::Receipt, codegen::StartAt, codegen::Delivery, protocol::Cursor) {
    (receipt, start, delivery, cursor)
}
