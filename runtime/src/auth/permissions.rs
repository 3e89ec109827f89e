//! Declarative permissions: which streams a principal may subscribe to or publish on,
//! and which Kafka keys (rooms, tenants, devices) it may read or write, from its claims.
//!
//! ```
//! use kafkasocks::{Operation, Permissions, Principal};
//!
//! // Everyone signed in may read the lobby; the "permissions" claim grants the rest
//! // ("subscribe:chat.v1.*", "publish:chat.v1.ChatStreams/Post", "*:…"); keys of the
//! // chat's streams are limited to the rooms in the "rooms" claim.
//! let permissions = Permissions::none()
//!     .grant(Operation::Subscribe, "chat.v1.Lobby/*")
//!     .grant_from_claim("permissions")
//!     .pin_keys("chat.v1.ChatStreams/*", "rooms");
//! let ada = Principal::new("ada")
//!     .claim_list("permissions", ["subscribe:chat.v1.ChatStreams/Messages"])
//!     .claim_list("rooms", ["general"]);
//! assert!(permissions.check(&ada, Operation::Subscribe, "chat.v1.ChatStreams/Messages").is_ok());
//! assert!(permissions.check(&ada, Operation::Publish, "chat.v1.ChatStreams/Post").is_err());
//! assert!(permissions.check_key(&ada, "chat.v1.ChatStreams/Messages", Some(b"general")).is_ok());
//! assert!(permissions.check_key(&ada, "chat.v1.ChatStreams/Messages", Some(b"secret")).is_err());
//! ```

use std::fmt;

use crate::auth::Principal;
use crate::protocol::{Code, Status};

/// What a request does with a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// Reads records (a server-streaming method).
    Subscribe,
    /// Produces a record (a unary method).
    Publish,
}

impl Operation {
    fn word(self) -> &'static str {
        match self {
            Operation::Subscribe => "subscribe",
            Operation::Publish => "publish",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.word())
    }
}

/// A method pattern: a full method name (`chat.v1.ChatStreams/Post`), or one with `*`
/// matching any run of characters (`chat.v1.ChatStreams/*`, `*`).
#[derive(Debug, Clone)]
struct Pattern(String);

impl Pattern {
    fn matches(&self, method: &str) -> bool {
        glob(self.0.as_bytes(), method.as_bytes())
    }
}

/// `*` matches any run of bytes; everything else matches itself.
fn glob(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, t));
            p += 1;
        } else if p < pattern.len() && pattern[p] == text[t] {
            p += 1;
            t += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[derive(Debug, Clone)]
struct Grant {
    op: Option<Operation>,
    pattern: Pattern,
}

#[derive(Debug, Clone)]
struct Pin {
    pattern: Pattern,
    claim: String,
}

/// What principals may do. [`Permissions::allow_all`] (the default) lets every principal
/// the authenticator accepted use every stream with any key; [`Permissions::none`] starts
/// from nothing and adds grants. A request outside them gets `PERMISSION_DENIED`, naming
/// the stream. Checked for WebSocket sessions, gRPC calls and [`LocalStreams`](crate::LocalStreams)
/// alike, before the stream's own hooks (grants) and on the key they chose (pins).
#[derive(Debug, Clone)]
pub struct Permissions {
    all: bool,
    grants: Vec<Grant>,
    claims: Vec<String>,
    pins: Vec<Pin>,
}

impl Default for Permissions {
    fn default() -> Permissions {
        Permissions::allow_all()
    }
}

impl Permissions {
    /// Every stream, every key, for every principal the authenticator accepts.
    pub fn allow_all() -> Permissions {
        Permissions { all: true, grants: Vec::new(), claims: Vec::new(), pins: Vec::new() }
    }

    /// Nothing, until granted.
    pub fn none() -> Permissions {
        Permissions { all: false, ..Permissions::allow_all() }
    }

    /// Lets every principal do `op` on the methods matching `pattern`.
    pub fn grant(mut self, op: Operation, pattern: impl Into<String>) -> Permissions {
        self.grants.push(Grant { op: Some(op), pattern: Pattern(pattern.into()) });
        self
    }

    /// Lets every principal do anything on the methods matching `pattern`.
    pub fn grant_all_operations(mut self, pattern: impl Into<String>) -> Permissions {
        self.grants.push(Grant { op: None, pattern: Pattern(pattern.into()) });
        self
    }

    /// Grants what the claim at `path` lists, per principal: strings (or an array of
    /// them, or space-separated words) `subscribe:<pattern>`, `publish:<pattern>` or
    /// `*:<pattern>`. Anything else in the claim grants nothing.
    pub fn grant_from_claim(mut self, path: impl Into<String>) -> Permissions {
        self.claims.push(path.into());
        self
    }

    /// Restricts the Kafka keys of the methods matching `pattern` to the strings of the
    /// claim at `path`: a subscription must select one of those keys (a subscription to
    /// every key is refused), a publish must produce with one. An element `*` allows any
    /// key, no key included. A principal without the claim may use no key. Several pins
    /// on one method must all allow the key.
    pub fn pin_keys(mut self, pattern: impl Into<String>, path: impl Into<String>) -> Permissions {
        self.pins.push(Pin { pattern: Pattern(pattern.into()), claim: path.into() });
        self
    }

    /// Whether `principal` may do `op` on `method`: `PERMISSION_DENIED` naming both when not.
    pub fn check(&self, principal: &Principal, op: Operation, method: &str) -> Result<(), Status> {
        if self.allows(principal, op, method) {
            return Ok(());
        }
        Err(Status::new(Code::PermissionDenied, format!("{} may not {op} {method}", who(principal))))
    }

    fn allows(&self, principal: &Principal, op: Operation, method: &str) -> bool {
        if self.all {
            return true;
        }
        let granted =
            |g_op: Option<Operation>, pattern: &Pattern| g_op.is_none_or(|o| o == op) && pattern.matches(method);
        if self.grants.iter().any(|g| granted(g.op, &g.pattern)) {
            return true;
        }
        self.claims.iter().any(|path| {
            principal.claims().words(path).into_iter().any(|entry| {
                let Some((word, pattern)) = entry.split_once(':') else { return false };
                let g_op = match word {
                    "subscribe" => Some(Operation::Subscribe),
                    "publish" => Some(Operation::Publish),
                    "*" => None,
                    _ => return false,
                };
                granted(g_op, &Pattern(pattern.to_owned()))
            })
        })
    }

    /// Whether `principal` may read or write `key` (`None`: no key, or every key for a
    /// subscription) on `method`.
    pub fn check_key(&self, principal: &Principal, method: &str, key: Option<&[u8]>) -> Result<(), Status> {
        for pin in self.pins.iter().filter(|p| p.pattern.matches(method)) {
            let allowed = principal.claims().strings(&pin.claim);
            let ok = allowed.iter().any(|a| *a == "*" || key.is_some_and(|k| a.as_bytes() == k));
            if !ok {
                let what = match key {
                    Some(k) => format!("key {:?}", String::from_utf8_lossy(k)),
                    None => "every key".to_owned(),
                };
                return Err(Status::new(
                    Code::PermissionDenied,
                    format!("{} may not use {what} of {method} (claim {:?})", who(principal), pin.claim),
                ));
            }
        }
        Ok(())
    }

    /// True when some pin applies to `method`.
    pub(crate) fn pins(&self, method: &str) -> bool {
        self.pins.iter().any(|p| p.pattern.matches(method))
    }
}

fn who(principal: &Principal) -> String {
    if principal.is_anonymous() { "an anonymous client".to_owned() } else { format!("{:?}", principal.subject()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_whole_names() {
        for (p, t, want) in [
            ("a.B/C", "a.B/C", true),
            ("a.B/C", "a.B/CD", false),
            ("a.B/*", "a.B/C", true),
            ("a.B/*", "a.BX/C", false),
            ("*", "anything", true),
            ("*/Post", "x.Y/Post", true),
            ("*/Post", "x.Y/Posts", false),
            ("a*c*e", "abcde", true),
            ("a*c*e", "abcd", false),
            ("", "", true),
        ] {
            assert_eq!(glob(p.as_bytes(), t.as_bytes()), want, "{p} ~ {t}");
        }
    }

    #[test]
    fn grants_from_claims_and_pins() {
        let perms = Permissions::none()
            .grant(Operation::Subscribe, "pub.*")
            .grant_from_claim("perms")
            .grant_from_claim("scope")
            .pin_keys("chat/*", "rooms");
        let p = Principal::new("ada")
            .claim_list("perms", ["publish:chat/Post", "bogus", "read:chat/*"])
            .claim("scope", "subscribe:chat/Messages openid")
            .claim_list("rooms", ["r1"]);
        let ok = |op, m| perms.check(&p, op, m).is_ok();
        assert!(ok(Operation::Subscribe, "pub.x/Y"));
        assert!(!ok(Operation::Publish, "pub.x/Y"));
        assert!(ok(Operation::Publish, "chat/Post"));
        assert!(ok(Operation::Subscribe, "chat/Messages"));
        assert!(!ok(Operation::Subscribe, "chat/Post"));
        assert!(!ok(Operation::Publish, "chat/Other"), "'read:' is not an operation");
        let denied = perms.check(&p, Operation::Publish, "chat/Other").expect_err("denied");
        assert_eq!(denied.code(), Code::PermissionDenied);
        assert!(denied.message().contains("chat/Other") && denied.message().contains("ada"));
        assert!(perms.check_key(&p, "chat/Messages", Some(b"r1")).is_ok());
        assert!(perms.check_key(&p, "chat/Messages", Some(b"r2")).is_err());
        assert!(perms.check_key(&p, "chat/Messages", None).is_err(), "all keys is more than r1");
        assert!(perms.check_key(&p, "other/M", Some(b"anything")).is_ok(), "no pin there");
        let star = Principal::new("root").claim_list("rooms", ["*"]);
        assert!(perms.check_key(&star, "chat/Messages", None).is_ok());
        assert!(perms.check_key(&Principal::anonymous(), "chat/Messages", Some(b"r1")).is_err());
        assert!(Permissions::allow_all().check(&Principal::anonymous(), Operation::Publish, "x").is_ok());
    }
}
