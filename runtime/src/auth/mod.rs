//! Authentication and authorization: who a session acts for ([`Principal`], with its
//! [`Claims`]), how a token becomes one ([`Authenticator`], which sees the whole
//! [`Handshake`]), and what a principal may do ([`Permissions`]).
//!
//! A gateway fails closed: it refuses to start without an authenticator unless anonymous
//! access was enabled on purpose ([`GatewayBuilder::allow_anonymous`](crate::GatewayBuilder::allow_anonymous)).

#[cfg(feature = "jwt")]
pub(crate) mod jwt;
pub(crate) mod permissions;

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::time::SystemTime;

use serde_json::{Map, Value};

use crate::protocol::Status;

pub use permissions::{Operation, Permissions};

/// The claims of a principal: a JSON object, as a token carried it (arrays of
/// permissions, nested objects). Read them by name (`"rooms"`) or, for nested values, by
/// JSON Pointer (`"/realm_access/roles"`, RFC 6901); names that contain `/` or `.`, like
/// Auth0's `"https://example.com/roles"`, work by name.
#[derive(Clone, Default, PartialEq)]
pub struct Claims(Arc<Map<String, Value>>);

/// Claims text that is not a JSON object.
#[derive(Debug, thiserror::Error)]
#[error("claims must be a JSON object: {0}")]
pub struct ClaimsError(String);

impl Claims {
    /// No claims.
    pub fn new() -> Claims {
        Claims::default()
    }

    /// Claims from the text of a JSON object.
    pub fn from_json(text: &str) -> Result<Claims, ClaimsError> {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => Ok(Claims(Arc::new(map))),
            Ok(other) => Err(ClaimsError(format!("got {}", json_kind(&other)))),
            Err(e) => Err(ClaimsError(e.to_string())),
        }
    }

    #[cfg_attr(not(feature = "jwt"), allow(dead_code))]
    pub(crate) fn from_map(map: Map<String, Value>) -> Claims {
        Claims(Arc::new(map))
    }

    fn lookup(&self, path: &str) -> Option<&Value> {
        if let Some(v) = self.0.get(path) {
            return Some(v);
        }
        if let Some(pointer) = path.strip_prefix('/') {
            let mut parts = pointer.split('/').map(|p| p.replace("~1", "/").replace("~0", "~"));
            let first = parts.next()?;
            let mut v = self.0.get(&first)?;
            for p in parts {
                v = match v {
                    Value::Object(m) => m.get(&p)?,
                    Value::Array(a) => a.get(p.parse::<usize>().ok()?)?,
                    _ => return None,
                };
            }
            return Some(v);
        }
        None
    }

    /// A string claim.
    pub fn str(&self, path: &str) -> Option<&str> {
        self.lookup(path).and_then(Value::as_str)
    }

    /// A string claim, or the strings of an array claim (other elements skipped). Empty
    /// when absent. Space-separated scopes (`"scope": "a b"`) are one string: split them
    /// yourself, or use [`Claims::words`].
    pub fn strings(&self, path: &str) -> Vec<&str> {
        match self.lookup(path) {
            Some(Value::String(s)) => vec![s.as_str()],
            Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        }
    }

    /// The whitespace-separated words of a string claim (OAuth `scope`), or the strings
    /// of an array claim.
    pub fn words(&self, path: &str) -> Vec<&str> {
        match self.lookup(path) {
            Some(Value::String(s)) => s.split_whitespace().collect(),
            _ => self.strings(path),
        }
    }

    /// An integer claim.
    pub fn i64(&self, path: &str) -> Option<i64> {
        self.lookup(path).and_then(Value::as_i64)
    }

    /// A boolean claim.
    pub fn bool(&self, path: &str) -> Option<bool> {
        self.lookup(path).and_then(Value::as_bool)
    }

    /// Whether the claim is present (with any value, `null` included).
    pub fn contains(&self, path: &str) -> bool {
        self.lookup(path).is_some()
    }

    /// The claim as JSON text.
    pub fn json(&self, path: &str) -> Option<String> {
        self.lookup(path).map(Value::to_string)
    }

    /// All claims as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&*self.0).unwrap_or_default()
    }

    /// How many top-level claims.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn with(mut self, key: String, value: Value) -> Claims {
        Arc::make_mut(&mut self.0).insert(key, value);
        self
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

// Claims may hold personal data: Debug shows only their names.
impl fmt::Debug for Claims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

/// Who a session acts for.
#[derive(Clone, PartialEq)]
pub struct Principal {
    subject: String,
    expires_at: Option<SystemTime>,
    claims: Claims,
}

impl Principal {
    /// A principal with this subject, no expiry and no claims.
    pub fn new(subject: impl Into<String>) -> Principal {
        Principal { subject: subject.into(), expires_at: None, claims: Claims::new() }
    }

    /// The anonymous principal (empty subject). Sessions of anonymous principals share
    /// nothing: idempotency keys and publish budgets are kept per session and per address.
    pub fn anonymous() -> Principal {
        Principal::new("")
    }

    /// The session ends (close 4002) at this time unless the token is refreshed.
    pub fn expires_at(mut self, at: SystemTime) -> Principal {
        self.expires_at = Some(at);
        self
    }

    /// Attaches a string claim.
    pub fn claim(mut self, key: impl Into<String>, value: impl Into<String>) -> Principal {
        self.claims = self.claims.with(key.into(), Value::String(value.into()));
        self
    }

    /// Attaches a claim holding an array of strings (permissions, rooms, roles).
    pub fn claim_list<I, S>(mut self, key: impl Into<String>, values: I) -> Principal
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let list = values.into_iter().map(|s| Value::String(s.into())).collect();
        self.claims = self.claims.with(key.into(), Value::Array(list));
        self
    }

    /// Replaces the claims.
    pub fn with_claims(mut self, claims: Claims) -> Principal {
        self.claims = claims;
        self
    }

    /// The subject; empty when anonymous.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// True for the anonymous principal.
    pub fn is_anonymous(&self) -> bool {
        self.subject.is_empty()
    }

    /// When the token expires.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// The claims.
    pub fn claims(&self) -> &Claims {
        &self.claims
    }
}

// Claims may hold personal data: Debug shows only the subject and the claim names.
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .field("claims", &self.claims)
            .finish()
    }
}

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// A WebSocket session (`Hello`, `TokenRefresh`).
    WebSocket,
    /// A call to a generated gRPC service (bearer token in the `authorization` metadata).
    Grpc,
    /// In process ([`LocalStreams`](crate::LocalStreams)).
    InProcess,
}

/// What an [`Authenticator`] knows about the request besides the token: the HTTP
/// handshake of a WebSocket (or the metadata of a gRPC call) and the peer.
#[derive(Clone)]
pub struct Handshake {
    transport: Transport,
    path: String,
    headers: Vec<(String, String)>,
    peer: Option<SocketAddr>,
    client_ip: Option<IpAddr>,
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values can hold cookies and tokens: names only.
        f.debug_struct("Handshake")
            .field("transport", &self.transport)
            .field("path", &self.path)
            .field("origin", &self.origin())
            .field("headers", &self.headers.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>())
            .field("peer", &self.peer)
            .field("client_ip", &self.client_ip)
            .finish()
    }
}

impl Handshake {
    /// A handshake of `transport` from `peer`, with these headers (names are compared
    /// without case; values that are not text are dropped by the caller). The client
    /// address is the peer's, unless the gateway takes it from `X-Forwarded-For` of a
    /// trusted proxy (`GatewayConfig::trusted_proxies`).
    pub fn new<I, K, V>(
        transport: Transport,
        path: impl Into<String>,
        headers: I,
        peer: Option<SocketAddr>,
    ) -> Handshake
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let headers = headers.into_iter().map(|(k, v)| (k.into().to_ascii_lowercase(), v.into())).collect();
        Handshake { transport, path: path.into(), headers, peer, client_ip: peer.map(|p| p.ip()) }
    }

    /// A request made in process: no headers, no peer.
    pub fn in_process() -> Handshake {
        Handshake::new(Transport::InProcess, "", std::iter::empty::<(String, String)>(), None)
    }

    /// Drops every header but Origin and Host: what a session keeps for its life (for
    /// `TokenRefresh`), so that cookies and user agents do not cost every idle connection.
    pub(crate) fn keep_origin_and_host(&mut self) {
        self.headers.retain(|(k, _)| k == "origin" || k == "host");
        self.headers.shrink_to_fit();
    }

    pub(crate) fn with_client_ip(mut self, ip: IpAddr) -> Handshake {
        self.client_ip = Some(ip);
        self
    }

    /// Which door the request came through.
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// The request path (`/streams`); for gRPC, the method path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The first value of a header (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Every header, names in lower case.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// The `Origin` header: the page that opened the WebSocket. The gateway has already
    /// checked it against its allowlist.
    pub fn origin(&self) -> Option<&str> {
        self.header("origin")
    }

    /// The `Host` header.
    pub fn host(&self) -> Option<&str> {
        self.header("host")
    }

    /// The TCP peer (a load balancer, when there is one).
    pub fn peer(&self) -> Option<SocketAddr> {
        self.peer
    }

    /// The client's address: the peer's, or, when the peer is a configured trusted proxy,
    /// the address it forwarded (`X-Forwarded-For`).
    pub fn client_ip(&self) -> Option<IpAddr> {
        self.client_ip
    }
}

/// What [`Authenticator::authenticate`] returns.
pub type AuthFuture<'a> = Pin<Box<dyn Future<Output = Result<Principal, Status>> + Send + 'a>>;

/// Turns a bearer token (from `Hello`, `TokenRefresh`, or a gRPC call's `authorization`
/// metadata) into a [`Principal`], or refuses it with
/// [`Code::Unauthenticated`](crate::Code::Unauthenticated) (any error refuses it). It
/// sees the [`Handshake`] too: the Origin, Host, path, headers and client address.
///
/// At `Hello` the handshake has every header of the upgrade request; at `TokenRefresh`
/// only `Origin` and `Host` (a session does not keep the others for its life).
///
/// It may take its time (fetch keys, ask a service): the gateway bounds it with
/// [`Limits::auth_timeout`](crate::Limits::auth_timeout) and refuses the token when
/// the time is up.
///
/// Plain functions and closures `Fn(&str, &Handshake) -> Result<Principal, Status>` are
/// authenticators.
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the token.
    fn authenticate<'a>(&'a self, token: &'a str, handshake: &'a Handshake) -> AuthFuture<'a>;
}

impl<F> Authenticator for F
where
    F: Fn(&str, &Handshake) -> Result<Principal, Status> + Send + Sync + 'static,
{
    fn authenticate<'a>(&'a self, token: &'a str, handshake: &'a Handshake) -> AuthFuture<'a> {
        Box::pin(std::future::ready(self(token, handshake)))
    }
}

/// Accepts every token as the anonymous principal: what
/// [`GatewayBuilder::allow_anonymous`](crate::GatewayBuilder::allow_anonymous) installs.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AllowAnonymous;

impl Authenticator for AllowAnonymous {
    fn authenticate<'a>(&'a self, _token: &'a str, _handshake: &'a Handshake) -> AuthFuture<'a> {
        Box::pin(std::future::ready(Ok(Principal::anonymous())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_by_name_and_by_pointer() {
        let c = Claims::from_json(
            r#"{"sub":"ada","rooms":["a","b",3],"scope":"read write","realm_access":{"roles":["x"]},
                "https://example.com/roles":["admin"],"n":7,"ok":true,"a/b":1}"#,
        )
        .expect("claims");
        assert_eq!(c.str("sub"), Some("ada"));
        assert_eq!(c.strings("rooms"), ["a", "b"]);
        assert_eq!(c.strings("sub"), ["ada"]);
        assert_eq!(c.words("scope"), ["read", "write"]);
        assert_eq!(c.strings("/realm_access/roles"), ["x"]);
        assert_eq!(c.str("/rooms/1"), Some("b"));
        assert_eq!(c.strings("https://example.com/roles"), ["admin"]);
        assert_eq!(c.i64("/a~1b"), Some(1));
        assert_eq!((c.i64("n"), c.bool("ok")), (Some(7), Some(true)));
        assert!(c.strings("missing").is_empty() && !c.contains("/realm_access/nope"));
        assert!(Claims::from_json("[1]").is_err() && Claims::from_json("{").is_err());
        let p = Principal::new("ada").claim_list("rooms", ["r1"]).claim("team", "blue");
        assert_eq!((p.claims().strings("rooms"), p.claims().str("team")), (vec!["r1"], Some("blue")));
        assert!(!format!("{p:?}").contains("blue"), "Debug shows claim names, not values");
    }

    #[test]
    fn handshake_headers_ignore_case_and_debug_hides_values() {
        let h = Handshake::new(
            Transport::WebSocket,
            "/streams",
            [("Origin", "https://a.example"), ("Cookie", "secret=1")],
            None,
        );
        assert_eq!(h.origin(), Some("https://a.example"));
        assert_eq!(h.header("COOKIE"), Some("secret=1"));
        assert!(!format!("{h:?}").contains("secret=1"));
    }
}
