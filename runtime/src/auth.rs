//! Authentication: the token from `Hello` (and `TokenRefresh`) becomes a [`Principal`].

use std::collections::BTreeMap;
use std::fmt;
use std::time::SystemTime;

use crate::protocol::Status;

/// Who a session acts for.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    subject: String,
    expires_at: Option<SystemTime>,
    claims: BTreeMap<String, String>,
}

impl Principal {
    /// A principal with this subject and no expiry.
    pub fn new(subject: impl Into<String>) -> Principal {
        Principal { subject: subject.into(), expires_at: None, claims: BTreeMap::new() }
    }

    /// The anonymous principal (empty subject).
    pub fn anonymous() -> Principal {
        Principal::new("")
    }

    /// The session ends (close 4002) at this time unless the token is refreshed.
    pub fn expires_at(mut self, at: SystemTime) -> Principal {
        self.expires_at = Some(at);
        self
    }

    /// Attaches a claim that hooks can read.
    pub fn claim(mut self, key: impl Into<String>, value: impl Into<String>) -> Principal {
        self.claims.insert(key.into(), value.into());
        self
    }

    /// The subject; empty when anonymous.
    pub fn subject(&self) -> &str {
        &self.subject
    }

    /// When the token expires.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.expires_at
    }

    /// A claim by name.
    pub fn get_claim(&self, key: &str) -> Option<&str> {
        self.claims.get(key).map(String::as_str)
    }
}

// Claims may hold personal data: Debug shows only the subject.
impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("subject", &self.subject)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Turns a bearer token into a [`Principal`], or refuses it with
/// [`Code::Unauthenticated`](crate::Code::Unauthenticated). Called once per `Hello` and
/// per `TokenRefresh`; must not block for long (it runs on the connection's task).
pub trait Authenticator: Send + Sync + 'static {
    /// Checks the token.
    fn authenticate(&self, token: &str) -> Result<Principal, Status>;
}

impl<F> Authenticator for F
where
    F: Fn(&str) -> Result<Principal, Status> + Send + Sync + 'static,
{
    fn authenticate(&self, token: &str) -> Result<Principal, Status> {
        self(token)
    }
}

/// Accepts every token as the anonymous principal. The default: fine on a laptop, not
/// on the internet.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAnonymous;

impl Authenticator for AllowAnonymous {
    fn authenticate(&self, _token: &str) -> Result<Principal, Status> {
        Ok(Principal::anonymous())
    }
}
