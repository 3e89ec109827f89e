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
//! ```no_run
//! use kafkasocks::{Gateway, GatewayConfig, KafkaConfig, KeyField, Streams};
//!
//! # async fn run() -> Result<(), kafkasocks::Error> {
//! let streams = Streams::new()
//!     // server streaming: every record of "chat.messages" whose key is field 1 of the request
//!     .subscribe("chat.v1.ChatStreams/Messages", "chat.messages", KeyField::new(1))
//!     // unary: produce the request, keyed by its field 1, answer with the receipt
//!     .publish("chat.v1.ChatStreams/Post", "chat.messages", KeyField::new(1));
//! let config = GatewayConfig::new(KafkaConfig::from_env()).listen("127.0.0.1:8080".parse().unwrap());
//! let gateway = Gateway::builder(config).streams(streams).bind().await?;
//! gateway.run().await
//! # }
//! ```
//!
//! # Design
//!
//! * [`Gateway`] accepts connections; each runs the session state machine of the
//!   protocol. Frames to a client go through a bounded send queue that the fan-out never
//!   waits on: a full queue or exhausted credit pauses the subscription, which keeps
//!   only its cursor and catches up later.
//! * Per topic one live Kafka reader (assign mode, no consumer group) feeds every
//!   subscriber, through a key index; each record is encoded once. A replay ring per
//!   partition serves resumes from memory; older offsets are read by a bounded number of
//!   catch-up readers, which hand over to the live feed under one lock.
//! * Publishes use an idempotent producer with `acks=all`, and a dedup window for
//!   idempotency keys.
//! * [`client::Client`] is a Rust client with reconnection and resume.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod auth;
pub mod client;
#[doc(hidden)]
pub mod codegen;
mod config;
mod connection;
mod dedup;
mod error;
mod kafka;
mod local;
mod metrics;
mod outbox;
mod registry;
mod server;
mod stream;
mod subscription;
pub mod wire;

pub use auth::{AllowAnonymous, Authenticator, Principal};
pub use config::{GatewayConfig, KafkaConfig, Limits, TlsConfig};
pub use error::{Code, Discontinuity, Error, Status};
pub use local::{LocalStreams, RecordStream};
pub use registry::RegistrySchema;
pub use server::{Gateway, GatewayBuilder, SUBPROTOCOL, ShutdownHandle};
pub use stream::{
    BoxFuture, KeyField, OutgoingRecord, PublishHook, RecordFilter, RecordView, RequestContext, Streams, SubscribeHook,
    SubscriptionPlan,
};
