//! What the checks on a WebSocket upgrade request decide: an [`Admission`] (the headers of
//! the 101 answer and what the session needs) or a [`Refusal`] (status, headers, body).
//! The checks themselves are [`GatewayService::admit`](super::GatewayService::admit)'s,
//! the same for the gateway's own listener and for an embedding server.

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Response, StatusCode};

use crate::auth::Handshake;
use crate::session::clients::Slot;

/// What an admitted upgrade runs.
pub(crate) enum Admitted {
    /// A session, with its handshake context and connection slot.
    Session(Handshake, Slot),
    /// The conformance echo.
    #[cfg(feature = "conformance-echo")]
    Echo(Slot),
}

/// An upgrade request the gateway admits: answer it with `101 Switching Protocols` and
/// [`Admission::response_headers`], then hand the upgraded connection to
/// [`GatewayService::serve_websocket`](super::GatewayService::serve_websocket).
///
/// It holds one of the gateway's connection slots
/// ([`Limits::max_connections`](crate::Limits::max_connections) and the per-address share):
/// dropping it unserved (the upgrade failed) gives the slot back.
pub struct Admission {
    pub(crate) headers: HeaderMap,
    pub(crate) admitted: Admitted,
}

impl std::fmt::Debug for Admission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admission").field("response_headers", &self.headers).finish_non_exhaustive()
    }
}

impl Admission {
    pub(crate) fn new(admitted: Admitted) -> Admission {
        Admission { headers: HeaderMap::new(), admitted }
    }

    /// The headers of the `101 Switching Protocols` answer: `Upgrade`, `Connection`,
    /// `Sec-WebSocket-Accept` and the chosen `Sec-WebSocket-Protocol`.
    pub fn response_headers(&self) -> &HeaderMap {
        &self.headers
    }

    /// The whole `101 Switching Protocols` answer, with an empty body.
    pub fn response<B: Default>(&self) -> Response<B> {
        let mut resp = Response::new(B::default());
        *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}

/// An upgrade request the gateway refuses, and the answer to send instead of the upgrade:
/// 400 (not a WebSocket upgrade, or without the kafkasocks subprotocol), 403 (`Origin` or
/// `Host` not allowed), 503 with `Retry-After` (shutting down, or the connection limits).
/// The body says why, in one line of text.
#[derive(Debug, Clone)]
pub struct Refusal(Box<Refused>);

#[derive(Debug, Clone)]
struct Refused {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Refusal {
    pub(crate) fn new(status: StatusCode, why: impl Into<String>, retry_after: Option<u64>) -> Refusal {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        // As the gateway's listener does: a refused upgrade ends its connection.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        if let Some(secs) = retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        let mut body = why.into();
        body.push('\n');
        Refusal(Box::new(Refused { status, headers, body }))
    }

    /// The status to answer with.
    pub fn status(&self) -> StatusCode {
        self.0.status
    }

    /// The headers to answer with: `Content-Type`, `Connection: close` (the connection
    /// ends, as on the gateway's own listener), and `Retry-After` with 503.
    pub fn headers(&self) -> &HeaderMap {
        &self.0.headers
    }

    /// Why, as the body to answer with (text, one line).
    pub fn body(&self) -> &str {
        &self.0.body
    }

    /// The whole answer.
    pub fn into_response<B: From<String>>(self) -> Response<B> {
        let Refused { status, headers, body } = *self.0;
        let mut resp = Response::new(B::from(body));
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp
    }
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.0.status, self.0.body.trim_end())
    }
}

impl std::error::Error for Refusal {}
