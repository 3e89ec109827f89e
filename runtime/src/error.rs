//! [`Error`]: what the gateway's and the client's own API return (start-up, configuration,
//! connecting). What a peer is told is a [`Status`](crate::Status) instead.
//!
//! Every variant keeps the error that caused it as its [`source`](std::error::Error::source),
//! boxed, so that third-party error types stay out of this crate's public API while the
//! whole chain still reaches logs (`{:#}` with anyhow, or walking `source()`).

use std::net::SocketAddr;

use crate::protocol::{CursorError, Status};

/// The cause of an [`Error`]: any error, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error from the gateway's or client's own API.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A listener could not be bound.
    #[error("binding {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Another I/O failure.
    #[error("i/o error")]
    Io(#[from] std::io::Error),
    /// A TLS file could not be read or the TLS configuration is unusable.
    #[error("TLS configuration: {what}")]
    Tls {
        /// What was being done, e.g. the file being read.
        what: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// A Kafka client could not be created or configured.
    #[error("Kafka: {what}")]
    Kafka {
        /// What was being done.
        what: String,
        /// librdkafka's error.
        #[source]
        source: BoxError,
    },
    /// The configuration is inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// The Schema Registry cannot be used as configured: unreachable, refusing the
    /// credentials, or (lookup-only and use-latest modes) not holding a stream's schema.
    #[error("Schema Registry: {what}")]
    Registry {
        /// What was being done, naming the stream and subject where there is one, and why.
        what: String,
        /// The client's error, when there is one.
        #[source]
        source: Option<BoxError>,
    },
    /// The WebSocket layer failed (client side).
    #[error("WebSocket: {what}")]
    WebSocket {
        /// What was being done.
        what: String,
        /// Why it failed.
        #[source]
        source: BoxError,
    },
    /// Bytes that should be a cursor are not.
    #[error(transparent)]
    Cursor(#[from] CursorError),
    /// The peer answered with an error.
    #[error(transparent)]
    Status(#[from] Status),
}

impl Error {
    #[cfg(any(feature = "tls", feature = "client"))]
    pub(crate) fn tls(what: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::Tls { what: what.into(), source: source.into() }
    }

    #[cfg(all(feature = "server", feature = "tls"))]
    pub(crate) fn tls_file(path: &std::path::Path, source: impl Into<BoxError>) -> Error {
        Error::tls(format!("reading {}", path.display()), source)
    }

    #[cfg(feature = "server")]
    pub(crate) fn kafka(what: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::Kafka { what: what.into(), source: source.into() }
    }

    #[cfg(feature = "client")]
    pub(crate) fn websocket(what: impl Into<String>, source: impl Into<BoxError>) -> Error {
        Error::WebSocket { what: what.into(), source: source.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[cfg(all(feature = "server", feature = "tls"))]
    #[test]
    fn sources_are_kept() {
        let e = Error::tls_file(std::path::Path::new("/nope.pem"), std::io::Error::other("gone"));
        assert_eq!(e.to_string(), "TLS configuration: reading /nope.pem");
        assert_eq!(e.source().map(ToString::to_string).as_deref(), Some("gone"));
    }
}
