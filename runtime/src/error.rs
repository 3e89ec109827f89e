//! Errors: [`Status`] is what a peer is told (a stable [`Code`] and a message);
//! [`Error`] is what the gateway's own API returns (start-up, configuration).

use std::fmt;
use std::time::Duration;

use crate::wire;

/// Stable status codes, numbered as gRPC's. Sent on the wire in `Error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// The operation was cancelled.
    Cancelled,
    /// An error with no better code.
    Unknown,
    /// The request is malformed.
    InvalidArgument,
    /// A deadline passed first.
    DeadlineExceeded,
    /// The method or topic does not exist.
    NotFound,
    /// The id is already in use.
    AlreadyExists,
    /// The principal may not do this.
    PermissionDenied,
    /// A limit was hit: retry later.
    ResourceExhausted,
    /// The session is not in a state that allows this.
    FailedPrecondition,
    /// The operation was aborted.
    Aborted,
    /// Out of range.
    OutOfRange,
    /// Not implemented (for example an unknown frame type).
    Unimplemented,
    /// A bug in the gateway.
    Internal,
    /// Kafka or the gateway is unavailable: retry.
    Unavailable,
    /// Continuity cannot be kept: see [`Discontinuity`].
    DataLoss,
    /// The token is missing or invalid.
    Unauthenticated,
}

impl Code {
    pub(crate) fn to_wire(self) -> wire::Code {
        match self {
            Code::Cancelled => wire::Code::Cancelled,
            Code::Unknown => wire::Code::Unknown,
            Code::InvalidArgument => wire::Code::InvalidArgument,
            Code::DeadlineExceeded => wire::Code::DeadlineExceeded,
            Code::NotFound => wire::Code::NotFound,
            Code::AlreadyExists => wire::Code::AlreadyExists,
            Code::PermissionDenied => wire::Code::PermissionDenied,
            Code::ResourceExhausted => wire::Code::ResourceExhausted,
            Code::FailedPrecondition => wire::Code::FailedPrecondition,
            Code::Aborted => wire::Code::Aborted,
            Code::OutOfRange => wire::Code::OutOfRange,
            Code::Unimplemented => wire::Code::Unimplemented,
            Code::Internal => wire::Code::Internal,
            Code::Unavailable => wire::Code::Unavailable,
            Code::DataLoss => wire::Code::DataLoss,
            Code::Unauthenticated => wire::Code::Unauthenticated,
        }
    }

    pub(crate) fn from_wire(code: i32) -> Code {
        match wire::Code::try_from(code) {
            Ok(wire::Code::Cancelled) => Code::Cancelled,
            Ok(wire::Code::InvalidArgument) => Code::InvalidArgument,
            Ok(wire::Code::DeadlineExceeded) => Code::DeadlineExceeded,
            Ok(wire::Code::NotFound) => Code::NotFound,
            Ok(wire::Code::AlreadyExists) => Code::AlreadyExists,
            Ok(wire::Code::PermissionDenied) => Code::PermissionDenied,
            Ok(wire::Code::ResourceExhausted) => Code::ResourceExhausted,
            Ok(wire::Code::FailedPrecondition) => Code::FailedPrecondition,
            Ok(wire::Code::Aborted) => Code::Aborted,
            Ok(wire::Code::OutOfRange) => Code::OutOfRange,
            Ok(wire::Code::Unimplemented) => Code::Unimplemented,
            Ok(wire::Code::Internal) => Code::Internal,
            Ok(wire::Code::Unavailable) => Code::Unavailable,
            Ok(wire::Code::DataLoss) => Code::DataLoss,
            Ok(wire::Code::Unauthenticated) => Code::Unauthenticated,
            _ => Code::Unknown,
        }
    }

    /// The label used in metrics and logs, e.g. `DATA_LOSS`.
    pub fn as_str(self) -> &'static str {
        self.to_wire().as_str_name()
    }
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
            code: self.code.to_wire() as i32,
            message: self.message.clone(),
            subscription_id,
            publish_id,
            discontinuity: self.discontinuity.map_or(wire::Discontinuity::Unspecified, Discontinuity::to_wire) as i32,
            retry_after_ms: self.retry_after.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX)),
        }
    }

    pub(crate) fn from_wire(e: &wire::Error) -> Status {
        Status {
            code: Code::from_wire(e.code),
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

/// An error from the gateway's or client's own API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A socket could not be bound or used.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The TLS configuration is unusable.
    #[error("TLS configuration: {0}")]
    Tls(String),
    /// Kafka refused or could not be reached.
    #[error("Kafka: {0}")]
    Kafka(String),
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The WebSocket layer failed (client side).
    #[error("WebSocket: {0}")]
    WebSocket(String),
    /// The peer answered with an error.
    #[error("{0}")]
    Status(#[from] Status),
}
