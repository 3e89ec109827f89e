//! The page server (`CHAT_HTTP_ADDR`): the page (`GET /`, `GET /app.js`) and the demo's
//! token endpoint (`POST /token`, see [`crate::token`]). HTTP/1.1 with hyper, bounded:
//!
//! | bound | value | why |
//! |---|---|---|
//! | time to send the request headers | 10 s ([`HEADER_READ_TIMEOUT`]) | a client that trickles bytes holds no connection for long |
//! | request header bytes | 16 KiB ([`MAX_HEADER_BYTES`]) | browsers send a few hundred bytes |
//! | `/token` body | 1 KiB ([`MAX_TOKEN_BODY`]), read within 10 s | `{"user":"…"}` is far smaller |
//! | connections at once, per client address | 64 ([`MAX_CONNECTIONS_PER_ADDRESS`]) | one client cannot take every connection |
//! | connections at once, in all | 1024 ([`MAX_CONNECTIONS`]) | bounded memory |

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::token::{TokenIssuer, valid_user};

/// Time a connection has to send a request's headers.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest request head (hyper's read buffer; its minimum is 8 KiB).
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Largest `/token` body.
pub(crate) const MAX_TOKEN_BODY: usize = 1024;
/// Time to receive the `/token` body once the headers are in.
const BODY_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once from one client address.
pub(crate) const MAX_CONNECTIONS_PER_ADDRESS: usize = 64;
/// Connections served at once.
pub(crate) const MAX_CONNECTIONS: usize = 1024;

/// Serves the page from `web` (`index.html`, `dist/app.js`) and tokens from `issuer`.
pub(crate) async fn serve(listener: TcpListener, web: PathBuf, issuer: Arc<TokenIssuer>) -> anyhow::Result<()> {
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT).max_buf_size(MAX_HEADER_BYTES);
    let open = Arc::new(OpenConnections::default());
    loop {
        let (stream, peer) = listener.accept().await?;
        let Some(slot) = open.take(peer.ip()) else {
            tracing::debug!(%peer, "page server: too many connections; closed");
            continue;
        };
        let (http, web, issuer) = (http.clone(), web.clone(), issuer.clone());
        tokio::spawn(async move {
            let _slot = slot;
            let service = hyper::service::service_fn(move |req| {
                let (web, issuer) = (web.clone(), issuer.clone());
                async move { Ok::<_, std::convert::Infallible>(respond(req, &web, &issuer).await) }
            });
            let _ = http.serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

async fn respond(req: Request<Incoming>, web: &std::path::Path, issuer: &TokenIssuer) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::POST, "/token") => token(req, issuer).await,
        (_, "/token") => {
            let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "POST a name: {\"user\": \"ada\"}\n");
            response.headers_mut().insert(hyper::header::ALLOW, hyper::header::HeaderValue::from_static("POST"));
            response
        }
        (&Method::GET | &Method::HEAD, "/" | "/index.html") => {
            file(web, "index.html", "text/html; charset=utf-8").await
        }
        (&Method::GET | &Method::HEAD, "/app.js") => file(web, "dist/app.js", "text/javascript").await,
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

async fn file(web: &std::path::Path, name: &str, content_type: &str) -> Response<Full<Bytes>> {
    match tokio::fs::read(web.join(name)).await {
        Ok(body) => Response::builder()
            .header(CONTENT_TYPE, content_type)
            .header(CACHE_CONTROL, "no-store")
            .body(Full::new(Bytes::from(body)))
            .unwrap_or_default(),
        Err(_) => text(StatusCode::NOT_FOUND, "not found (did scripts/demo build the page?)\n"),
    }
}

/// `POST /token` with `{"user": "ada"}` (JSON) or `user=ada` (a form): a JWT for that
/// name, `{"token": "…", "expires_at_ms": …}`; 400 with `{"error": "…"}` for a name it
/// does not accept, 413 for a body over 1 KiB.
async fn token(req: Request<Incoming>, issuer: &TokenIssuer) -> Response<Full<Bytes>> {
    let body =
        match tokio::time::timeout(BODY_READ_TIMEOUT, Limited::new(req.into_body(), MAX_TOKEN_BODY).collect()).await {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                return json_error(StatusCode::PAYLOAD_TOO_LARGE, "the body is at most 1 KiB");
            }
            Ok(Err(_)) | Err(_) => return json_error(StatusCode::BAD_REQUEST, "the body did not arrive"),
        };
    let user = match requested_user(&body) {
        Ok(user) => user,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, why),
    };
    let user = match valid_user(&user) {
        Ok(user) => user,
        Err(why) => return json_error(StatusCode::BAD_REQUEST, why),
    };
    match issuer.issue(user) {
        Ok(issued) => {
            tracing::info!(user, "token issued (demo endpoint: no password asked)");
            json(StatusCode::OK, serde_json::json!({ "token": issued.token, "expires_at_ms": issued.expires_at_ms }))
        }
        Err(e) => {
            tracing::error!(error = %e, "signing a token");
            json_error(StatusCode::INTERNAL_SERVER_ERROR, "could not sign a token")
        }
    }
}

/// The `user` of a JSON object (a body starting with `{`) or of a form (`user=…`).
fn requested_user(body: &[u8]) -> Result<String, &'static str> {
    if body.trim_ascii_start().starts_with(b"{") {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|_| "the body is not valid JSON")?;
        return match value.get("user") {
            Some(serde_json::Value::String(user)) => Ok(user.clone()),
            Some(_) => Err("\"user\" must be a string"),
            None => Err("the body needs a \"user\""),
        };
    }
    form_urlencoded::parse(body)
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.into_owned())
        .ok_or("the body needs a user: {\"user\": \"ada\"} or user=ada")
}

fn json(status: StatusCode, value: serde_json::Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "application/json")
        .header(CACHE_CONTROL, "no-store")
        .body(Full::new(Bytes::from(value.to_string())))
        .unwrap_or_default()
}

fn json_error(status: StatusCode, why: &str) -> Response<Full<Bytes>> {
    json(status, serde_json::json!({ "error": why }))
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap_or_default()
}

/// Connections open per client address, against [`MAX_CONNECTIONS_PER_ADDRESS`] and
/// [`MAX_CONNECTIONS`].
#[derive(Debug, Default)]
struct OpenConnections {
    by_address: Mutex<HashMap<IpAddr, usize>>,
}

/// One open connection; dropping it frees its place.
#[derive(Debug)]
struct Slot {
    open: Arc<OpenConnections>,
    ip: IpAddr,
}

impl OpenConnections {
    fn take(self: &Arc<Self>, ip: IpAddr) -> Option<Slot> {
        let mut map = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = map.values().sum();
        if total >= MAX_CONNECTIONS || map.get(&ip).is_some_and(|n| *n >= MAX_CONNECTIONS_PER_ADDRESS) {
            return None;
        }
        *map.entry(ip).or_insert(0) += 1;
        Some(Slot { open: self.clone(), ip })
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut map = self.open.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = map.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                map.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_or_form() {
        assert_eq!(requested_user(br#"{"user": "ada"}"#), Ok("ada".to_owned()));
        assert_eq!(requested_user(b"  {\"user\":\"bob\",\"extra\":1}"), Ok("bob".to_owned()));
        assert_eq!(requested_user(b"user=Ada+Lovelace&x=1"), Ok("Ada Lovelace".to_owned()));
        assert_eq!(requested_user(b"user=%3Cb%3E"), Ok("<b>".to_owned()));
        assert!(requested_user(br#"{"user": 7}"#).is_err());
        assert!(requested_user(br#"{"name": "ada"}"#).is_err());
        assert!(requested_user(b"{not json").is_err());
        assert!(requested_user(b"name=ada").is_err());
    }

    #[test]
    fn connections_per_address_are_bounded() {
        let open = Arc::new(OpenConnections::default());
        let a: IpAddr = [10, 0, 0, 1].into();
        let slots: Vec<_> = (0..MAX_CONNECTIONS_PER_ADDRESS).map_while(|_| open.take(a)).collect();
        assert_eq!(slots.len(), MAX_CONNECTIONS_PER_ADDRESS);
        assert!(open.take(a).is_none(), "one more from the same address is refused");
        assert!(open.take([10, 0, 0, 2].into()).is_some(), "another address is not");
        drop(slots);
        assert!(open.take(a).is_some());
    }
}
