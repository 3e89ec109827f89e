//! WebSocket close codes (docs/protocol.md §6): the standard ones the gateway uses and its
//! own in 4000-4999.

/// The gateway is shutting down (after GoAway).
pub(crate) const GOING_AWAY: u16 = 1001;
/// A frame that does not decode.
pub(crate) const PROTOCOL: u16 = 1002;
/// A text message: the protocol is binary only.
pub(crate) const UNSUPPORTED: u16 = 1003;
/// A message over the size limit.
pub(crate) const TOO_BIG: u16 = 1009;
/// No Hello, a bad Hello, or an unsupported protocol version.
pub(crate) const BAD_HELLO: u16 = 4000;
/// The token was refused.
pub(crate) const UNAUTHENTICATED: u16 = 4001;
/// The token expired and was not refreshed.
pub(crate) const TOKEN_EXPIRED: u16 = 4002;
/// The send queue stayed full: resume from the cursor.
pub(crate) const SLOW_CONSUMER: u16 = 4008;
/// Nothing was received within the idle timeout.
pub(crate) const IDLE: u16 = 4009;
/// The gateway is at its connection limit.
pub(crate) const OVERLOADED: u16 = 4013;
