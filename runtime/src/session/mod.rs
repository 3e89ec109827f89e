//! The session layer: the WebSocket session state machine ([`connection`]), publishes
//! with their dedup window ([`publish`], [`dedup`]), rate limits ([`rate`], [`clients`]) and
//! trace context ([`trace`]), the per-client connection bounds ([`clients`]), and the
//! same streams in process ([`local`]). Sessions open subscriptions on the fan-out layer
//! below and produce through the Kafka layer.

pub(crate) mod clients;
pub(crate) mod connection;
pub(crate) mod dedup;
pub(crate) mod local;
pub(crate) mod order;
pub(crate) mod publish;
pub(crate) mod rate;
pub(crate) mod shared;
pub(crate) mod trace;
