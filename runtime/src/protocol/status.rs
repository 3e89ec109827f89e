//! [`Status`]: what a peer is told about an outcome, a stable [`Code`] (one table, numbered
//! as gRPC's) and a message, with the details the protocol carries.

use std::fmt;
use std::time::Duration;

use super::wire;

/// Declares [`Code`] once: each variant with its gRPC number, its wire name and its doc.
macro_rules! codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $number:literal, $name:literal;)*) => {
        /// Stable status codes, numbered as gRPC's (the number is `Error.code` on the wire).
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Code {
            $($(#[doc = $doc])* $variant,)*
        }

        impl Code {
            /// Every code, in gRPC number order.
            pub const ALL: &'static [Code] = &[$(Code::$variant,)*];

            /// The gRPC status code number, which is also the number sent on the wire.
            pub const fn grpc(self) -> i32 {
                match self {
                    $(Code::$variant => $number,)*
                }
            }

            /// The code with gRPC number `number`; [`Code::Unknown`] for numbers that are
            /// not codes (0, OK, is never an error).
            pub const fn from_grpc(number: i32) -> Code {
                match number {
                    $($number => Code::$variant,)*
                    _ => Code::Unknown,
                }
            }

            /// The label used in metrics and logs, e.g. `DATA_LOSS`.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Code::$variant => $name,)*
                }
            }
        }
    };
}

codes! {
    /// The operation was cancelled.
    Cancelled = 1, "CANCELLED";
    /// An error with no better code.
    Unknown = 2, "UNKNOWN";
    /// The request is malformed.
    InvalidArgument = 3, "INVALID_ARGUMENT";
    /// A deadline passed first.
    DeadlineExceeded = 4, "DEADLINE_EXCEEDED";
    /// The method or topic does not exist.
    NotFound = 5, "NOT_FOUND";
    /// The id is already in use.
    AlreadyExists = 6, "ALREADY_EXISTS";
    /// The principal may not do this.
    PermissionDenied = 7, "PERMISSION_DENIED";
    /// A limit was hit: retry later.
    ResourceExhausted = 8, "RESOURCE_EXHAUSTED";
    /// The session is not in a state that allows this.
    FailedPrecondition = 9, "FAILED_PRECONDITION";
    /// The operation was aborted.
    Aborted = 10, "ABORTED";
    /// Out of range.
    OutOfRange = 11, "OUT_OF_RANGE";
    /// Not implemented (for example an unknown frame type).
    Unimplemented = 12, "UNIMPLEMENTED";
    /// A bug in the gateway.
    Internal = 13, "INTERNAL";
    /// Kafka or the gateway is unavailable: retry.
    Unavailable = 14, "UNAVAILABLE";
    /// Continuity cannot be kept: see [`Discontinuity`].
    DataLoss = 15, "DATA_LOSS";
    /// The token is missing or invalid.
    Unauthenticated = 16, "UNAUTHENTICATED";
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a resume cursor cannot be honoured (always with [`Code::DataLoss`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Discontinuity {
    /// The log no longer holds the cursor's offset.
    OffsetBelowLogStart,
    /// The topic was deleted and created again.
    TopicRecreated,
    /// The partition count differs from the cursor's.
    PartitionsChanged,
    /// The cursor points past the end of the log.
    OffsetBeyondEnd,
    /// The topic no longer exists.
    TopicDeleted,
}

impl Discontinuity {
    pub(crate) fn to_wire(self) -> wire::Discontinuity {
        match self {
            Discontinuity::OffsetBelowLogStart => wire::Discontinuity::OffsetBelowLogStart,
            Discontinuity::TopicRecreated => wire::Discontinuity::TopicRecreated,
            Discontinuity::PartitionsChanged => wire::Discontinuity::PartitionsChanged,
            Discontinuity::OffsetBeyondEnd => wire::Discontinuity::OffsetBeyondEnd,
            Discontinuity::TopicDeleted => wire::Discontinuity::TopicDeleted,
        }
    }

    pub(crate) fn from_wire(value: i32) -> Option<Discontinuity> {
        match wire::Discontinuity::try_from(value).ok()? {
            wire::Discontinuity::OffsetBelowLogStart => Some(Discontinuity::OffsetBelowLogStart),
            wire::Discontinuity::TopicRecreated => Some(Discontinuity::TopicRecreated),
            wire::Discontinuity::PartitionsChanged => Some(Discontinuity::PartitionsChanged),
            wire::Discontinuity::OffsetBeyondEnd => Some(Discontinuity::OffsetBeyondEnd),
            wire::Discontinuity::TopicDeleted => Some(Discontinuity::TopicDeleted),
            wire::Discontinuity::Unspecified => None,
        }
    }
}

/// An outcome a peer is told about: a stable code, a message, and details.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    code: Code,
    message: String,
    discontinuity: Option<Discontinuity>,
    retry_after: Option<Duration>,
}

impl Status {
    /// A status with a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Status {
        Status { code, message: message.into(), discontinuity: None, retry_after: None }
    }

    /// `INVALID_ARGUMENT`.
    pub fn invalid_argument(message: impl Into<String>) -> Status {
        Status::new(Code::InvalidArgument, message)
    }

    /// `PERMISSION_DENIED`.
    pub fn permission_denied(message: impl Into<String>) -> Status {
        Status::new(Code::PermissionDenied, message)
    }

    /// `UNAUTHENTICATED`.
    pub fn unauthenticated(message: impl Into<String>) -> Status {
        Status::new(Code::Unauthenticated, message)
    }

    /// `UNAVAILABLE`.
    pub fn unavailable(message: impl Into<String>) -> Status {
        Status::new(Code::Unavailable, message)
    }

    /// `DATA_LOSS` with the reason continuity is lost.
    pub fn data_loss(discontinuity: Discontinuity, message: impl Into<String>) -> Status {
        Status { discontinuity: Some(discontinuity), ..Status::new(Code::DataLoss, message) }
    }

    /// Adds a retry hint.
    pub fn with_retry_after(mut self, after: Duration) -> Status {
        self.retry_after = Some(after);
        self
    }

    /// The code.
    pub fn code(&self) -> Code {
        self.code
    }

    /// The human-readable message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Why continuity was lost, for [`Code::DataLoss`].
    pub fn discontinuity(&self) -> Option<Discontinuity> {
        self.discontinuity
    }

    /// How long retrying is pointless, when known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    pub(crate) fn to_wire(&self, subscription_id: u32, publish_id: u64) -> wire::Error {
        wire::Error {
            code: self.code.grpc(),
            message: self.message.clone(),
            subscription_id,
            publish_id,
            discontinuity: self.discontinuity.map_or(wire::Discontinuity::Unspecified, Discontinuity::to_wire) as i32,
            // Rounded up, and never 0 when there is a hint (0 is "none" on the wire).
            retry_after_ms: self
                .retry_after
                .map_or(0, |d| u32::try_from(d.as_nanos().div_ceil(1_000_000).max(1)).unwrap_or(u32::MAX)),
        }
    }

    pub(crate) fn from_wire(e: &wire::Error) -> Status {
        Status {
            code: Code::from_grpc(e.code),
            message: e.message.clone(),
            discontinuity: Discontinuity::from_wire(e.discontinuity),
            retry_after: (e.retry_after_ms > 0).then(|| Duration::from_millis(u64::from(e.retry_after_ms))),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)?;
        if let Some(d) = self.discontinuity {
            write!(f, " ({d:?})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Status {}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retry hints are whole milliseconds rounded up, never 0 (0 means "no hint").
    #[test]
    fn retry_hints_round_up_to_whole_milliseconds() {
        let ms = |d: Duration| Status::unavailable("x").with_retry_after(d).to_wire(0, 0).retry_after_ms;
        assert_eq!(ms(Duration::from_micros(1500)), 2);
        assert_eq!(ms(Duration::from_nanos(1)), 1);
        assert_eq!(ms(Duration::ZERO), 1);
        assert_eq!(ms(Duration::from_millis(500)), 500);
        assert_eq!(Status::unavailable("x").to_wire(0, 0).retry_after_ms, 0);
    }

    /// The one table agrees with the enum frame.proto declares, number for number.
    #[test]
    fn codes_match_frame_proto() {
        assert_eq!(Code::ALL.len(), 16);
        for &code in Code::ALL {
            let wire = wire::Code::try_from(code.grpc()).expect("a code of frame.proto");
            assert_eq!(wire.as_str_name(), code.as_str());
            assert_eq!(Code::from_grpc(code.grpc()), code);
        }
        assert_eq!(Code::from_grpc(0), Code::Unknown);
        assert_eq!(Code::from_grpc(99), Code::Unknown);
    }
}
