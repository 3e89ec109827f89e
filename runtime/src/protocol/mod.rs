//! The bottom layer: the wire protocol and the domain types every other layer speaks.
//! Nothing here knows about Kafka, sessions or sockets.
//!
//! * [`wire`]: the frames of `proto/kafkasocks/v1/frame.proto` and the hand-made encodings
//!   of the hot path;
//! * [`Code`], [`Status`], [`Discontinuity`]: outcomes as a peer is told them;
//! * [`Cursor`], [`StartAt`], [`Receipt`], [`Delivery`], [`RecordView`],
//!   [`OutgoingRecord`]: one type per concept, used by the gateway, the in-process
//!   streams, the Rust client and generated code alike;
//! * `trace`: W3C Trace Context (`traceparent`, `tracestate`) as publishes carry it.

// The layer serves the gateway and the client: a client-only build leaves the gateway's
// encodings (shared records, Data frames, Error frames) unused, which is expected.
#![cfg_attr(not(feature = "server"), allow(dead_code))]

#[cfg(feature = "server")]
pub(crate) mod close;
mod cursor;
mod records;
mod status;
#[cfg(feature = "server")]
pub(crate) mod trace;
pub mod wire;

pub use cursor::{Cursor, CursorError, StartAt};
pub use records::{Delivery, OutgoingRecord, Receipt, RecordView};
pub use status::{Code, Discontinuity, Status};

/// The WebSocket subprotocol of this protocol version.
pub const SUBPROTOCOL: &str = "kafkasocks.v1";
