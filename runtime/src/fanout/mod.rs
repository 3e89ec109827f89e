//! The fan-out layer: one live reader per topic shared by every subscriber in the process
//! ([`hub`]), the subscriber state it feeds ([`subscriber`]), the bounded per-connection
//! send queue ([`outbox`]) and each subscription's driver ([`subscription`]). It reads
//! Kafka only through the [`kafka`](crate::kafka) layer and knows nothing of sessions.
//!
//! Files import downwards only: `context` < `keys` < `outbox` < `subscriber` < `hub` <
//! `hubs` < `subscription`.

pub(crate) mod context;
pub(crate) mod hub;
pub(crate) mod hubs;
pub(crate) mod keys;
pub(crate) mod outbox;
pub(crate) mod subscriber;
pub(crate) mod subscription;
