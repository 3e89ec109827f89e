//! The built-in JWT authenticator: [`JwtConfig`] says which signing keys, issuers and
//! audiences to trust and builds a [`JwtAuthenticator`]. Users see this through the
//! crate-root re-exports, so the documentation lives on those two types.
//!
//! Layout: the public API ([`JwtAlgorithm`], [`JwtConfig`], [`JwtAuthenticator`]), then
//! the checks in the order a token meets them (size and structure in [`parse_jws`], key
//! selection and signature in `Inner::verify_token`, claims in `ClaimRules::check`),
//! then key loading (PEM, JWK, JWK Set) and the JWKS cache.

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::DecodingKey;
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::Error;
use crate::Secret;
use crate::auth::{AuthFuture, Authenticator, Claims, Handshake, Principal};
use crate::protocol::Status;

/// Default [`JwtConfig::max_token_bytes`]: real access tokens are 1-2 KiB; 8 KiB is
/// also the usual HTTP header limit.
const DEFAULT_MAX_TOKEN_BYTES: usize = 8 * 1024;
/// Default [`JwtConfig::jwks_refresh`].
const DEFAULT_JWKS_REFRESH: Duration = Duration::from_secs(5 * 60);
/// Default [`JwtConfig::jwks_min_refetch`].
const DEFAULT_JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Default [`JwtConfig::jwks_timeout`].
const DEFAULT_JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS (or JWK file) accepted: real ones are a few KiB.
const MAX_JWKS_BYTES: usize = 512 * 1024;
/// The most keys a JWKS (or JWK file) may hold: real ones hold 2-10.
const MAX_JWKS_KEYS: usize = 100;
/// The most keys one token's signature is tried against (keys sharing its `kid`, or
/// key-id-less keys): bounds the work one token can cause.
const MAX_KEYS_TRIED: usize = 4;
/// A JWKS key set stays usable this many refresh intervals after its last successful
/// fetch.
const JWKS_MAX_AGE_REFRESHES: u32 = 10;
/// RSA keys shorter than this are refused (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;
/// RSA keys longer than this are refused (the verifier's limit, and a bound on work).
const MAX_RSA_BITS: usize = 8192;
/// Members that only private or symmetric JWKs have.
const SECRET_JWK_MEMBERS: &[&str] = &["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

/// A JWS signature algorithm (RFC 7518 names in [`JwtAlgorithm::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    Rs256,
    /// RSASSA-PKCS1-v1_5 with SHA-384.
    Rs384,
    /// RSASSA-PKCS1-v1_5 with SHA-512.
    Rs512,
    /// RSASSA-PSS with SHA-256.
    Ps256,
    /// RSASSA-PSS with SHA-384.
    Ps384,
    /// RSASSA-PSS with SHA-512.
    Ps512,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// ECDSA on P-384 with SHA-384.
    Es384,
    /// Ed25519.
    EdDsa,
    /// HMAC with SHA-256 (only with [`JwtConfig::hmac_secret`]).
    Hs256,
    /// HMAC with SHA-384 (only with [`JwtConfig::hmac_secret`]).
    Hs384,
    /// HMAC with SHA-512 (only with [`JwtConfig::hmac_secret`]).
    Hs512,
}

impl JwtAlgorithm {
    /// Every supported algorithm.
    pub const ALL: &'static [JwtAlgorithm] = &[
        JwtAlgorithm::Rs256,
        JwtAlgorithm::Rs384,
        JwtAlgorithm::Rs512,
        JwtAlgorithm::Ps256,
        JwtAlgorithm::Ps384,
        JwtAlgorithm::Ps512,
        JwtAlgorithm::Es256,
        JwtAlgorithm::Es384,
        JwtAlgorithm::EdDsa,
        JwtAlgorithm::Hs256,
        JwtAlgorithm::Hs384,
        JwtAlgorithm::Hs512,
    ];

    /// The name in a JWT header (`"RS256"`, `"EdDSA"`).
    pub const fn as_str(self) -> &'static str {
        match self {
            JwtAlgorithm::Rs256 => "RS256",
            JwtAlgorithm::Rs384 => "RS384",
            JwtAlgorithm::Rs512 => "RS512",
            JwtAlgorithm::Ps256 => "PS256",
            JwtAlgorithm::Ps384 => "PS384",
            JwtAlgorithm::Ps512 => "PS512",
            JwtAlgorithm::Es256 => "ES256",
            JwtAlgorithm::Es384 => "ES384",
            JwtAlgorithm::EdDsa => "EdDSA",
            JwtAlgorithm::Hs256 => "HS256",
            JwtAlgorithm::Hs384 => "HS384",
            JwtAlgorithm::Hs512 => "HS512",
        }
    }

    /// The algorithm named exactly `name` (names are case-sensitive).
    fn from_name(name: &str) -> Option<JwtAlgorithm> {
        JwtAlgorithm::ALL.iter().copied().find(|a| a.as_str() == name)
    }

    /// The one kind of key that can verify this algorithm.
    fn key_type(self) -> KeyType {
        match self {
            JwtAlgorithm::Rs256
            | JwtAlgorithm::Rs384
            | JwtAlgorithm::Rs512
            | JwtAlgorithm::Ps256
            | JwtAlgorithm::Ps384
            | JwtAlgorithm::Ps512 => KeyType::Rsa,
            JwtAlgorithm::Es256 => KeyType::P256,
            JwtAlgorithm::Es384 => KeyType::P384,
            JwtAlgorithm::EdDsa => KeyType::Ed25519,
            JwtAlgorithm::Hs256 | JwtAlgorithm::Hs384 | JwtAlgorithm::Hs512 => KeyType::Hmac,
        }
    }

    /// RFC 7518 §3.2: an HMAC key at least as long as the hash output.
    fn min_secret_bytes(self) -> usize {
        match self {
            JwtAlgorithm::Hs384 => 48,
            JwtAlgorithm::Hs512 => 64,
            _ => 32,
        }
    }

    fn to_jsonwebtoken(self) -> jsonwebtoken::Algorithm {
        use jsonwebtoken::Algorithm as A;
        match self {
            JwtAlgorithm::Rs256 => A::RS256,
            JwtAlgorithm::Rs384 => A::RS384,
            JwtAlgorithm::Rs512 => A::RS512,
            JwtAlgorithm::Ps256 => A::PS256,
            JwtAlgorithm::Ps384 => A::PS384,
            JwtAlgorithm::Ps512 => A::PS512,
            JwtAlgorithm::Es256 => A::ES256,
            JwtAlgorithm::Es384 => A::ES384,
            JwtAlgorithm::EdDsa => A::EdDSA,
            JwtAlgorithm::Hs256 => A::HS256,
            JwtAlgorithm::Hs384 => A::HS384,
            JwtAlgorithm::Hs512 => A::HS512,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = Error;

    /// Parses a JWA name (`"ES256"`), case-sensitively.
    fn from_str(s: &str) -> Result<JwtAlgorithm, Error> {
        JwtAlgorithm::from_name(s).ok_or_else(|| {
            let names: Vec<&str> = JwtAlgorithm::ALL.iter().map(|a| a.as_str()).collect();
            Error::Config(format!("unknown JWT algorithm {:?} (supported: {})", short(s), names.join(", ")))
        })
    }
}

/// The kinds of verification key, each verifying its own algorithms only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyType {
    Rsa,
    P256,
    P384,
    Ed25519,
    Hmac,
}

impl KeyType {
    fn describe(self) -> &'static str {
        match self {
            KeyType::Rsa => "RSA",
            KeyType::P256 => "EC P-256",
            KeyType::P384 => "EC P-384",
            KeyType::Ed25519 => "Ed25519",
            KeyType::Hmac => "HMAC",
        }
    }

    /// The algorithm a JWK of this type without `alg` is taken to be for.
    fn default_algorithm(self) -> Option<JwtAlgorithm> {
        match self {
            KeyType::Rsa => Some(JwtAlgorithm::Rs256),
            KeyType::P256 => Some(JwtAlgorithm::Es256),
            KeyType::P384 => Some(JwtAlgorithm::Es384),
            KeyType::Ed25519 => Some(JwtAlgorithm::EdDsa),
            KeyType::Hmac => None,
        }
    }

    /// Bytes of one EC coordinate.
    fn coordinate_len(self) -> usize {
        match self {
            KeyType::P384 => 48,
            _ => 32,
        }
    }
}

/// Builds a [`JwtAuthenticator`]: which keys, issuers and audiences to trust. Every
/// setter documents its default; [`build`](JwtConfig::build) checks the whole and reads
/// the key files and secrets.
///
/// Configure at least one [`issuer`](JwtConfig::issuer) and one
/// [`audience`](JwtConfig::audience). Without an issuer, any token signed by a trusted key
/// is accepted whoever minted it; without an audience, a token minted for another service
/// of the same issuer works here too. `build` refuses a configuration with no audience
/// unless [`skip_audience_check`](JwtConfig::skip_audience_check) says so on purpose.
///
/// # Example
///
/// ```no_run
/// use kafkasocks::{JwtAlgorithm, JwtConfig, Secret};
///
/// # fn run() -> Result<(), kafkasocks::Error> {
/// // An OpenID Connect issuer: keys from its JWKS, refreshed in the background.
/// let oidc = JwtConfig::new()
///     .issuer("https://login.example.com/")
///     .audience("kafkasocks")
///     .jwks_url("https://login.example.com/.well-known/jwks.json")
///     .build()?;
///
/// // One public key from a file, for ES256 only, with its key id.
/// let pem = JwtConfig::new()
///     .issuer("https://tokens.example.com")
///     .audience("chat")
///     .key_pem_file("/etc/kafkasocks/jwt-es256.pem", JwtAlgorithm::Es256)
///     .key_id("2026-01")
///     .build()?;
///
/// // A shared HMAC secret, read from a file when `build` runs.
/// let hmac = JwtConfig::new()
///     .issuer("https://tokens.example.com")
///     .audience("chat")
///     .hmac_secret(Secret::from_file("/run/secrets/jwt-hs256"), JwtAlgorithm::Hs256)
///     .build()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct JwtConfig {
    issuers: Vec<String>,
    audiences: Vec<String>,
    skip_audience_check: bool,
    leeway: Duration,
    require_exp: bool,
    subject_claim: String,
    max_token_bytes: usize,
    keys: Vec<KeySpec>,
    jwks_urls: Vec<String>,
    allow_http_jwks: bool,
    algorithms: Option<Vec<JwtAlgorithm>>,
    jwks_refresh: Duration,
    jwks_min_refetch: Duration,
    jwks_timeout: Duration,
    /// Misuse found by a setter, reported by `build`.
    errors: Vec<String>,
}

#[derive(Clone)]
enum KeySpec {
    Pem {
        source: Source,
        algorithm: JwtAlgorithm,
        kid: Option<String>,
    },
    Jwk(Source),
    Hmac {
        secret: Secret,
        algorithm: JwtAlgorithm,
        kid: Option<String>,
    },
    #[cfg(test)]
    Ready(Arc<Key>),
}

#[derive(Clone)]
enum Source {
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Source {
    fn describe(&self, what: &str) -> String {
        match self {
            Source::File(path) => format!("{what} file {}", path.display()),
            Source::Bytes(_) => format!("{what} key"),
        }
    }

    fn read(&self, what: &str) -> Result<Vec<u8>, String> {
        match self {
            Source::Bytes(bytes) => Ok(bytes.clone()),
            Source::File(path) => read_bounded(path).map_err(|e| format!("reading the {what} file: {e}")),
        }
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
    }
    Ok(bytes)
}

impl fmt::Debug for KeySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySpec::Pem { source, algorithm, kid } => f
                .debug_struct("Pem")
                .field("source", &source.describe("PEM"))
                .field("algorithm", algorithm)
                .field("kid", kid)
                .finish(),
            KeySpec::Jwk(source) => f.debug_tuple("Jwk").field(&source.describe("JWK")).finish(),
            KeySpec::Hmac { secret, algorithm, kid } => {
                f.debug_struct("Hmac").field("secret", secret).field("algorithm", algorithm).field("kid", kid).finish()
            }
            #[cfg(test)]
            KeySpec::Ready(key) => key.fmt(f),
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("skip_audience_check", &self.skip_audience_check)
            .field("leeway", &self.leeway)
            .field("require_exp", &self.require_exp)
            .field("subject_claim", &self.subject_claim)
            .field("max_token_bytes", &self.max_token_bytes)
            .field("keys", &self.keys)
            .field("jwks_urls", &self.jwks_urls)
            .field("allow_http_jwks", &self.allow_http_jwks)
            .field("algorithms", &self.algorithms)
            .field("jwks_refresh", &self.jwks_refresh)
            .field("jwks_min_refetch", &self.jwks_min_refetch)
            .field("jwks_timeout", &self.jwks_timeout)
            .finish()
    }
}

impl Default for JwtConfig {
    fn default() -> JwtConfig {
        JwtConfig::new()
    }
}

impl JwtConfig {
    /// Default [`JwtConfig::leeway`], 30 s: clocks of issuers and gateways drift by seconds,
    /// not minutes.
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

    /// A configuration with no keys, issuers or audiences yet, and the defaults below.
    pub fn new() -> JwtConfig {
        JwtConfig {
            issuers: Vec::new(),
            audiences: Vec::new(),
            skip_audience_check: false,
            leeway: JwtConfig::DEFAULT_LEEWAY,
            require_exp: true,
            subject_claim: "sub".to_owned(),
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
            keys: Vec::new(),
            jwks_urls: Vec::new(),
            allow_http_jwks: false,
            algorithms: None,
            jwks_refresh: DEFAULT_JWKS_REFRESH,
            jwks_min_refetch: DEFAULT_JWKS_MIN_REFETCH,
            jwks_timeout: DEFAULT_JWKS_TIMEOUT,
            errors: Vec::new(),
        }
    }

    /// Accepts tokens whose `iss` is `issuer` (exactly). Call it once per issuer: a token
    /// from any of them is accepted. Default: none, and then `iss` is not checked at all,
    /// which is only safe when the keys are the issuer's alone; configure it.
    pub fn issuer(mut self, issuer: impl Into<String>) -> JwtConfig {
        self.issuers.push(issuer.into());
        self
    }

    /// Accepts tokens whose `aud` (a string, or an array of strings) contains `audience`.
    /// Call it once per audience: any of them is accepted. Default: none, and
    /// [`build`](JwtConfig::build) fails unless
    /// [`skip_audience_check`](JwtConfig::skip_audience_check) was called.
    pub fn audience(mut self, audience: impl Into<String>) -> JwtConfig {
        self.audiences.push(audience.into());
        self
    }

    /// Says on purpose that `aud` is not checked: any token of the trusted keys (and
    /// issuers) is accepted, whatever service it was minted for.
    pub fn skip_audience_check(mut self) -> JwtConfig {
        self.skip_audience_check = true;
        self
    }

    /// How far `exp`, `nbf` and `iat` may be off, for clock skew. Default: 30 seconds.
    pub fn leeway(mut self, leeway: Duration) -> JwtConfig {
        self.leeway = leeway;
        self
    }

    /// Whether tokens must carry `exp`. Default: true. A token without `exp` gives a
    /// principal that never expires.
    pub fn require_exp(mut self, require: bool) -> JwtConfig {
        self.require_exp = require;
        self
    }

    /// The claim that holds the subject: a name (`"email"`) or a JSON Pointer
    /// (`"/user/id"`), as in [`Claims::str`]. It must be a non-empty string. Default:
    /// `"sub"`.
    pub fn subject_claim(mut self, path: impl Into<String>) -> JwtConfig {
        self.subject_claim = path.into();
        self
    }

    /// The longest token accepted, in bytes; longer ones are refused before they are
    /// parsed. Default: 8 KiB.
    pub fn max_token_bytes(mut self, bytes: usize) -> JwtConfig {
        self.max_token_bytes = bytes;
        self
    }

    /// Trusts the public key in this PEM file (`PUBLIC KEY`, i.e. SPKI, with an RSA,
    /// EC P-256/P-384 or Ed25519 key, or `RSA PUBLIC KEY`) for `algorithm` only. The file
    /// is read by [`build`](JwtConfig::build). The key has no key id unless
    /// [`key_id`](JwtConfig::key_id) follows.
    pub fn key_pem_file(mut self, path: impl Into<PathBuf>, algorithm: JwtAlgorithm) -> JwtConfig {
        self.keys.push(KeySpec::Pem { source: Source::File(path.into()), algorithm, kid: None });
        self
    }

    /// Trusts this PEM public key for `algorithm` only; as
    /// [`key_pem_file`](JwtConfig::key_pem_file).
    pub fn key_pem(mut self, pem: impl AsRef<[u8]>, algorithm: JwtAlgorithm) -> JwtConfig {
        self.keys.push(KeySpec::Pem { source: Source::Bytes(pem.as_ref().to_vec()), algorithm, kid: None });
        self
    }

    /// Trusts the public key(s) in this file: one JWK, or a JWK Set (`{"keys": [...]}`).
    /// Each key accepts its `alg`, or the one its type implies; keys that cannot verify
    /// (`use` not `sig`, `key_ops` without `verify`, unsupported types or algorithms) are
    /// skipped, and `build` fails if none is left. Symmetric (`oct`) and private keys
    /// are refused: HMAC secrets go to [`hmac_secret`](JwtConfig::hmac_secret).
    pub fn key_jwk_file(mut self, path: impl Into<PathBuf>) -> JwtConfig {
        self.keys.push(KeySpec::Jwk(Source::File(path.into())));
        self
    }

    /// Trusts the public key(s) in this JWK or JWK Set text; as
    /// [`key_jwk_file`](JwtConfig::key_jwk_file).
    pub fn key_jwk(mut self, jwk: impl AsRef<[u8]>) -> JwtConfig {
        self.keys.push(KeySpec::Jwk(Source::Bytes(jwk.as_ref().to_vec())));
        self
    }

    /// Gives the key added just before (by [`key_pem`](JwtConfig::key_pem),
    /// [`key_pem_file`](JwtConfig::key_pem_file) or
    /// [`hmac_secret`](JwtConfig::hmac_secret)) a key id: tokens whose header carries
    /// this `kid` are checked against it. Without one, the key checks only tokens that
    /// carry no `kid`.
    pub fn key_id(mut self, kid: impl Into<String>) -> JwtConfig {
        match self.keys.last_mut() {
            Some(KeySpec::Pem { kid: slot, .. } | KeySpec::Hmac { kid: slot, .. }) if slot.is_none() => {
                *slot = Some(kid.into());
            }
            _ => self.errors.push(
                "key_id() names the key added just before it by key_pem, key_pem_file or hmac_secret, once".to_owned(),
            ),
        }
        self
    }

    /// Trusts the keys of the JWK Set at this URL, fetched when first needed and then
    /// refreshed (see [`JwtAuthenticator`]). `https://` only, unless
    /// [`allow_http_jwks`](JwtConfig::allow_http_jwks). Call it once per URL.
    pub fn jwks_url(mut self, url: impl Into<String>) -> JwtConfig {
        self.jwks_urls.push(url.into());
        self
    }

    /// Allows `http://` JWKS URLs, for tests and for issuers inside the same trusted
    /// network. Default: `https://` only.
    pub fn allow_http_jwks(mut self) -> JwtConfig {
        self.allow_http_jwks = true;
        self
    }

    /// Trusts this HMAC secret (its UTF-8 bytes, read by [`build`](JwtConfig::build)) for
    /// `algorithm`, which must be HS256, HS384 or HS512; the secret must be at least as
    /// long as the hash (32, 48, 64 bytes). The only way HS* tokens are ever accepted.
    pub fn hmac_secret(mut self, secret: Secret, algorithm: JwtAlgorithm) -> JwtConfig {
        if algorithm.key_type() != KeyType::Hmac {
            self.errors.push(format!("hmac_secret() takes HS256, HS384 or HS512, not {algorithm}"));
        }
        self.keys.push(KeySpec::Hmac { secret, algorithm, kid: None });
        self
    }

    /// Accepts only these algorithms, whatever the keys would take: each key's
    /// algorithms are intersected with this list (a configured key left with none fails
    /// `build`; such a JWKS key is skipped). Default: no global restriction.
    pub fn algorithms(mut self, algorithms: impl IntoIterator<Item = JwtAlgorithm>) -> JwtConfig {
        self.algorithms = Some(algorithms.into_iter().collect());
        self
    }

    /// How often JWKS URLs are fetched again in the background. Default: 5 minutes.
    /// Refetches never come closer than [`jwks_min_refetch`](JwtConfig::jwks_min_refetch).
    pub fn jwks_refresh(mut self, every: Duration) -> JwtConfig {
        self.jwks_refresh = every;
        self
    }

    /// The least time between two fetches of one JWKS URL, whatever asks (tokens with an
    /// unknown `kid`, a failed fetch being retried, the refresh). Default: 30 seconds.
    pub fn jwks_min_refetch(mut self, interval: Duration) -> JwtConfig {
        self.jwks_min_refetch = interval;
        self
    }

    /// How long one JWKS fetch may take, connecting included. Default: 5 seconds.
    pub fn jwks_timeout(mut self, timeout: Duration) -> JwtConfig {
        self.jwks_timeout = timeout;
        self
    }

    #[cfg(test)]
    fn with_key(mut self, key: Key) -> JwtConfig {
        self.keys.push(KeySpec::Ready(Arc::new(key)));
        self
    }

    /// Checks the configuration, reads key files and secrets, and returns the
    /// authenticator. No network access happens here: JWKS URLs are fetched when a
    /// token first needs them. Fails with [`Error::Config`] when there is no key source,
    /// no audience (and no [`skip_audience_check`](JwtConfig::skip_audience_check)), a key
    /// does not fit its algorithm (an RSA key for ES256, a PEM key for HS256), a file
    /// or secret cannot be read, a JWKS URL is not `https://`, or two keys share a key id.
    pub fn build(self) -> Result<JwtAuthenticator, Error> {
        let config = |message: String| Error::Config(format!("JWT: {message}"));
        if let Some(error) = self.errors.first() {
            return Err(config(error.clone()));
        }
        if self.keys.is_empty() && self.jwks_urls.is_empty() {
            return Err(config(
                "no signing keys: configure key_pem, key_pem_file, key_jwk_file, jwks_url or hmac_secret".to_owned(),
            ));
        }
        match (self.audiences.is_empty(), self.skip_audience_check) {
            (true, false) => {
                return Err(config(
                    "no audience: configure audience(...) (strongly recommended) or call skip_audience_check()"
                        .to_owned(),
                ));
            }
            (false, true) => return Err(config("both audience() and skip_audience_check() are set".to_owned())),
            _ => {}
        }
        if self.subject_claim.is_empty() {
            return Err(config("subject_claim is empty".to_owned()));
        }
        if self.max_token_bytes == 0 {
            return Err(config("max_token_bytes is 0".to_owned()));
        }
        if self.algorithms.as_ref().is_some_and(Vec::is_empty) {
            return Err(config("algorithms() lists no algorithm".to_owned()));
        }
        if self.jwks_timeout.is_zero() || self.jwks_refresh.is_zero() {
            return Err(config("jwks_timeout and jwks_refresh must be more than zero".to_owned()));
        }
        ensure_crypto_provider();
        let allowed = self.algorithms.as_deref();

        let mut static_keys: Vec<Arc<Key>> = Vec::new();
        for spec in &self.keys {
            match spec {
                KeySpec::Pem { source, algorithm, kid } => {
                    let origin = source.describe("PEM");
                    let key = source
                        .read("PEM")
                        .and_then(|pem| Key::from_pem(&pem, *algorithm, kid.clone(), Arc::from(origin.as_str())))
                        .and_then(|key| key.restrict(allowed))
                        .map_err(|e| config(format!("{origin}: {e}")))?;
                    static_keys.push(Arc::new(key));
                }
                KeySpec::Jwk(source) => {
                    let origin = source.describe("JWK");
                    let load = source
                        .read("JWK")
                        .and_then(|bytes| parse_jwk_document(&bytes, &Arc::from(origin.as_str()), allowed))
                        .map_err(|e| config(format!("{origin}: {e}")))?;
                    if load.keys.is_empty() {
                        return Err(config(format!("{origin}: no usable signing key ({})", load.skipped.join("; "))));
                    }
                    for skipped in &load.skipped {
                        tracing::warn!("JWT: {origin}: skipping {skipped}");
                    }
                    static_keys.extend(load.keys);
                }
                KeySpec::Hmac { secret, algorithm, kid } => {
                    let value = secret.reveal()?;
                    let key = Key::hmac(value.as_bytes(), *algorithm, kid.clone(), Arc::from("HMAC secret"))
                        .and_then(|key| key.restrict(allowed))
                        .map_err(|e| config(format!("HMAC secret: {e}")))?;
                    static_keys.push(Arc::new(key));
                }
                #[cfg(test)]
                KeySpec::Ready(key) => {
                    let key = Key::clone(key).restrict(allowed).map_err(config)?;
                    static_keys.push(Arc::new(key));
                }
            }
        }
        let mut kids = HashSet::new();
        for kid in static_keys.iter().filter_map(|k| k.kid.as_deref()) {
            if !kids.insert(kid) {
                return Err(config(format!("two keys have the key id {:?}", short(kid))));
            }
        }

        let mut jwks = Vec::new();
        for url in &self.jwks_urls {
            let parsed = reqwest::Url::parse(url).map_err(|e| config(format!("JWKS URL {url:?}: {e}")))?;
            match parsed.scheme() {
                "https" => {}
                "http" if self.allow_http_jwks => {}
                _ => {
                    return Err(config(format!(
                        "JWKS URL {url:?} must be https:// (allow_http_jwks() permits http:// for tests and trusted networks)"
                    )));
                }
            }
            if parsed.host_str().is_none_or(str::is_empty) {
                return Err(config(format!("JWKS URL {url:?} has no host")));
            }
            jwks.push(Arc::new(JwksSource::new(parsed)));
        }
        let fetcher = if jwks.is_empty() {
            None
        } else {
            let _ = rustls::crypto::ring::default_provider().install_default();
            let client = reqwest::Client::builder()
                .https_only(!self.allow_http_jwks)
                .timeout(self.jwks_timeout)
                .connect_timeout(self.jwks_timeout)
                .redirect(reqwest::redirect::Policy::limited(3))
                .user_agent(concat!("kafkasocks/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| config(format!("the JWKS HTTP client: {}", error_chain(&e))))?;
            Some(Arc::new(Fetcher {
                client,
                timeout: self.jwks_timeout,
                min_refetch: self.jwks_min_refetch,
                refresh: self.jwks_refresh,
                max_age: self.jwks_refresh.saturating_mul(JWKS_MAX_AGE_REFRESHES),
                algorithms: self.algorithms.clone(),
            }))
        };

        Ok(JwtAuthenticator {
            inner: Arc::new(Inner {
                rules: ClaimRules {
                    issuers: self.issuers,
                    audiences: self.audiences,
                    leeway: self.leeway,
                    require_exp: self.require_exp,
                    subject_claim: self.subject_claim,
                },
                max_token_bytes: self.max_token_bytes,
                static_keys,
                jwks,
                fetcher,
                refresher: Mutex::new(None),
            }),
        })
    }
}

/// jsonwebtoken picks its crypto provider from its features; when a build enables both
/// of its backends it has none and would panic, so install ours first.
fn ensure_crypto_provider() {
    if jsonwebtoken::crypto::CryptoProvider::try_get_default().is_none() {
        let _ = jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER.install_default();
    }
}

/// The built-in [`Authenticator`] for JWTs, made by [`JwtConfig::build`]. Cheap to clone:
/// clones share the keys, the JWKS cache and its refresh task, which ends when the last
/// clone is dropped.
///
/// # How a token is checked
///
/// 1. An empty token is refused ("a token is required"), and so is one longer than
///    [`JwtConfig::max_token_bytes`], before anything is parsed.
/// 2. It must be a compact JWS: three strict base64url parts (no padding, no stray
///    characters). The header must name a supported `alg`; `none` is always refused, and
///    so is any `crit` header (no extension is implemented). The header members `jku`,
///    `x5u`, `x5c` and `jwk` are ignored: keys come only from the configuration, and
///    nothing a token names is ever fetched or trusted.
/// 3. Keys are selected by key id: a token with a `kid` is checked only against keys with
///    that `kid`, a token without one only against keys without one (see
///    [`JwtConfig::key_id`]). Each key accepts only its own algorithm: the one given with
///    a PEM key or an HMAC secret, a JWK's `alg`, or, for a JWK without `alg`, the one its
///    type implies (RSA: RS256, EC P-256: ES256, EC P-384: ES384, Ed25519: EdDSA). So a
///    token re-signed with HS256 using a public key as the HMAC secret is refused: that
///    key takes no HS256. HS256/384/512 are accepted only with a secret given to
///    [`JwtConfig::hmac_secret`].
/// 4. The signature is verified.
/// 5. The claims: `exp` (required unless [`JwtConfig::require_exp`]`(false)`), `nbf` and
///    `iat` (not in the future), each with [`JwtConfig::leeway`]; `iss` and `aud` when
///    configured; a non-empty subject ([`JwtConfig::subject_claim`]). The principal's
///    expiry is `exp`, and its [`Claims`] are the whole claim set.
///
/// A refused token gets `UNAUTHENTICATED` with the reason (token expired, wrong audience,
/// wrong issuer, bad signature, unknown signing key, unsupported algorithm, ...), never
/// an echo of the token.
///
/// # Keys from a JWKS URL
///
/// A [`JwtConfig::jwks_url`] is fetched lazily: the first token that needs it fetches it
/// (tokens arriving meanwhile wait for that same fetch), and from then on a background
/// task refreshes it every [`JwtConfig::jwks_refresh`]. A token whose `kid` is unknown
/// triggers one refetch, at most once per [`JwtConfig::jwks_min_refetch`] however many
/// such tokens arrive; concurrent ones share the fetch in flight. A failed refresh keeps
/// the last key set, for at most ten refresh intervals. When there is no usable key set
/// (the JWKS was never reached, or not for that long), tokens it would have to verify are
/// refused with "signing keys unavailable": the authenticator fails closed.
///
/// A fetch is bounded by [`JwtConfig::jwks_timeout`], 512 KiB and 100 keys. Keys the
/// verifier cannot use (`use` other than `sig`, `key_ops` without `verify`, unsupported
/// types, curves or algorithms, RSA keys under 2048 bits or with the ROCA weakness) are
/// skipped; a set that holds private or symmetric (`oct`) key material, or two usable
/// keys with one `kid`, is refused whole.
#[derive(Clone)]
pub struct JwtAuthenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for JwtAuthenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = &self.inner;
        f.debug_struct("JwtAuthenticator")
            .field("issuers", &inner.rules.issuers)
            .field("audiences", &inner.rules.audiences)
            .field("keys", &inner.static_keys)
            .field("jwks", &inner.jwks.iter().map(|s| &*s.origin).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(&'a self, token: &'a str, _handshake: &'a Handshake) -> AuthFuture<'a> {
        Box::pin(async move {
            Inner::authenticate(&self.inner, token).await.map_err(|refusal| {
                tracing::debug!(reason = %refusal, "JWT refused");
                Status::unauthenticated(refusal.to_string())
            })
        })
    }
}

/// Why a token was refused; its text is what the client is told.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Refusal {
    Missing,
    TooLarge(usize),
    Malformed(&'static str),
    Unsigned,
    UnsupportedAlgorithm(Option<&'static str>),
    CriticalHeader,
    UnknownKey,
    AlgorithmNotAllowed(JwtAlgorithm),
    BadSignature,
    KeysUnavailable,
    Expired,
    NotYetValid,
    IssuedInFuture,
    MissingClaim(&'static str),
    InvalidClaim(&'static str),
    WrongIssuer,
    WrongAudience,
    NoSubject,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Missing => f.write_str("a token is required"),
            Refusal::TooLarge(limit) => write!(f, "token too large (the limit is {limit} bytes)"),
            Refusal::Malformed(what) => write!(f, "malformed token: {what}"),
            Refusal::Unsigned => f.write_str("unsigned tokens (alg none) are not accepted"),
            Refusal::UnsupportedAlgorithm(Some(name)) => write!(f, "unsupported algorithm {name}"),
            Refusal::UnsupportedAlgorithm(None) => f.write_str("unsupported algorithm"),
            Refusal::CriticalHeader => f.write_str("unsupported critical header (crit)"),
            Refusal::UnknownKey => f.write_str("unknown signing key"),
            Refusal::AlgorithmNotAllowed(alg) => write!(f, "unsupported algorithm {alg} for this signing key"),
            Refusal::BadSignature => f.write_str("bad signature"),
            Refusal::KeysUnavailable => f.write_str("signing keys unavailable"),
            Refusal::Expired => f.write_str("token expired"),
            Refusal::NotYetValid => f.write_str("token not yet valid (nbf)"),
            Refusal::IssuedInFuture => f.write_str("token issued in the future (iat)"),
            Refusal::MissingClaim(name) => write!(f, "token has no {name} claim"),
            Refusal::InvalidClaim(name) => write!(f, "malformed {name} claim"),
            Refusal::WrongIssuer => f.write_str("wrong issuer"),
            Refusal::WrongAudience => f.write_str("wrong audience"),
            Refusal::NoSubject => f.write_str("token has no subject"),
        }
    }
}

/// Names of JWS algorithms we do not implement, which a refusal may repeat (any other
/// `alg` text is not echoed).
const KNOWN_UNSUPPORTED: &[&str] = &["ES512", "ES256K", "Ed25519", "Ed448", "RS1", "HS1"];

struct ClaimRules {
    issuers: Vec<String>,
    audiences: Vec<String>,
    leeway: Duration,
    require_exp: bool,
    subject_claim: String,
}

struct Inner {
    rules: ClaimRules,
    max_token_bytes: usize,
    static_keys: Vec<Arc<Key>>,
    jwks: Vec<Arc<JwksSource>>,
    /// Present when there are JWKS sources.
    fetcher: Option<Arc<Fetcher>>,
    refresher: Mutex<Option<Refresher>>,
}

/// The background refresh task; dropping the sender (with [`Inner`]) stops it.
struct Refresher {
    task: tokio::task::JoinHandle<()>,
    _stop: oneshot::Sender<()>,
}

impl Inner {
    async fn authenticate(self: &Arc<Inner>, token: &str) -> Result<Principal, Refusal> {
        let payload = self.verify_token(token).await?;
        self.rules.check(&payload, SystemTime::now())
    }

    /// Everything but the claims: size, structure and header, key selection (fetching
    /// JWKS keys when needed) and the signature. Returns the payload.
    async fn verify_token(self: &Arc<Inner>, token: &str) -> Result<Vec<u8>, Refusal> {
        if token.is_empty() {
            return Err(Refusal::Missing);
        }
        if token.len() > self.max_token_bytes {
            return Err(Refusal::TooLarge(self.max_token_bytes));
        }
        let jws = parse_jws(token)?;
        let mut candidates = self.candidates(&jws);
        if candidates.is_empty()
            && let Some(fetcher) = &self.fetcher
        {
            self.start_refresher(fetcher);
            let fetches = self.jwks.iter().map(|source| {
                let want = if source.current(fetcher.max_age).is_some() { Want::Again } else { Want::IfUnusable };
                source.ensure(fetcher, want)
            });
            futures_util::future::join_all(fetches).await;
            candidates = self.candidates(&jws);
            if candidates.is_empty() && self.jwks.iter().any(|s| s.current(fetcher.max_age).is_none()) {
                return Err(Refusal::KeysUnavailable);
            }
        }
        if candidates.is_empty() {
            return Err(Refusal::UnknownKey);
        }
        let mut usable = candidates.iter().filter(|key| key.algorithms.contains(&jws.alg)).peekable();
        if usable.peek().is_none() {
            return Err(Refusal::AlgorithmNotAllowed(jws.alg));
        }
        if usable.take(MAX_KEYS_TRIED).any(|key| key.verifies(&jws)) {
            Ok(jws.payload)
        } else {
            Err(Refusal::BadSignature)
        }
    }

    /// The keys that may have signed `jws`: those with its `kid`, or, for a token without
    /// one, those without one.
    fn candidates(&self, jws: &Jws<'_>) -> Vec<Arc<Key>> {
        let fits = |key: &&Arc<Key>| key.kid.as_deref() == jws.kid.as_deref();
        let mut keys: Vec<Arc<Key>> = self.static_keys.iter().filter(fits).cloned().collect();
        if let Some(fetcher) = &self.fetcher {
            for source in &self.jwks {
                if let Some(set) = source.current(fetcher.max_age) {
                    keys.extend(set.iter().filter(fits).cloned());
                }
            }
        }
        keys
    }

    /// Starts the refresh task unless it runs (it also restarts one whose runtime ended).
    fn start_refresher(self: &Arc<Inner>, fetcher: &Fetcher) {
        let mut slot = lock(&self.refresher);
        if slot.as_ref().is_some_and(|r| !r.task.is_finished()) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let (stop, stopped) = oneshot::channel();
        let task = runtime.spawn(refresh_loop(Arc::downgrade(self), stopped, fetcher.refresh));
        *slot = Some(Refresher { task, _stop: stop });
    }
}

async fn refresh_loop(inner: Weak<Inner>, mut stopped: oneshot::Receiver<()>, every: Duration) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = &mut stopped => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if let Some(fetcher) = &inner.fetcher {
            futures_util::future::join_all(inner.jwks.iter().map(|s| s.ensure(fetcher, Want::Again))).await;
        }
    }
}

impl ClaimRules {
    fn check(&self, payload: &[u8], now: SystemTime) -> Result<Principal, Refusal> {
        let claims: Map<String, Value> =
            serde_json::from_slice(payload).map_err(|_| Refusal::Malformed("the claims are not a JSON object"))?;
        let now = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
        let leeway = self.leeway.as_secs_f64();
        let exp = numeric_date(&claims, "exp")?;
        match exp {
            None if self.require_exp => return Err(Refusal::MissingClaim("exp")),
            Some(exp) if now >= exp + leeway => return Err(Refusal::Expired),
            _ => {}
        }
        if numeric_date(&claims, "nbf")?.is_some_and(|nbf| now + leeway < nbf) {
            return Err(Refusal::NotYetValid);
        }
        if numeric_date(&claims, "iat")?.is_some_and(|iat| iat > now + leeway) {
            return Err(Refusal::IssuedInFuture);
        }
        if !self.issuers.is_empty() {
            match claims.get("iss") {
                None => return Err(Refusal::MissingClaim("iss")),
                Some(Value::String(iss)) if self.issuers.contains(iss) => {}
                Some(Value::String(_)) => return Err(Refusal::WrongIssuer),
                Some(_) => return Err(Refusal::InvalidClaim("iss")),
            }
        }
        if !self.audiences.is_empty() {
            let ours = |aud: &str| self.audiences.iter().any(|a| a == aud);
            let matched = match claims.get("aud") {
                None => return Err(Refusal::MissingClaim("aud")),
                Some(Value::String(aud)) => ours(aud),
                Some(Value::Array(auds)) if auds.iter().all(Value::is_string) => {
                    auds.iter().filter_map(Value::as_str).any(ours)
                }
                Some(_) => return Err(Refusal::InvalidClaim("aud")),
            };
            if !matched {
                return Err(Refusal::WrongAudience);
            }
        }
        let claims = Claims::from_map(claims);
        let subject = match claims.str(&self.subject_claim) {
            Some(subject) if !subject.is_empty() => subject.to_owned(),
            _ => return Err(Refusal::NoSubject),
        };
        let mut principal = Principal::new(subject).with_claims(claims);
        if let Some(exp) = exp {
            let at = Duration::try_from_secs_f64(exp.max(0.0))
                .ok()
                .and_then(|since| UNIX_EPOCH.checked_add(since))
                .ok_or(Refusal::InvalidClaim("exp"))?;
            principal = principal.expires_at(at);
        }
        Ok(principal)
    }
}

/// A NumericDate claim (seconds since the epoch, possibly fractional), if present.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<f64>, Refusal> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_f64().filter(|v| v.is_finite()).map(Some).ok_or(Refusal::InvalidClaim(name)),
        Some(_) => Err(Refusal::InvalidClaim(name)),
    }
}

/// A compact JWS whose header has been checked; its signature not yet.
struct Jws<'t> {
    alg: JwtAlgorithm,
    kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    signing_input: &'t str,
    signature: &'t str,
    payload: Vec<u8>,
}

fn parse_jws(token: &str) -> Result<Jws<'_>, Refusal> {
    let mut parts = token.split('.');
    let (Some(header_part), Some(payload_part), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::Malformed("a JWT is three base64url parts separated by dots"));
    };
    let header = URL_SAFE_NO_PAD.decode(header_part).map_err(|_| Refusal::Malformed("the header is not base64url"))?;
    let header: Map<String, Value> =
        serde_json::from_slice(&header).map_err(|_| Refusal::Malformed("the header is not a JSON object"))?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) if name.eq_ignore_ascii_case("none") => return Err(Refusal::Unsigned),
        Some(Value::String(name)) => JwtAlgorithm::from_name(name)
            .ok_or_else(|| Refusal::UnsupportedAlgorithm(KNOWN_UNSUPPORTED.iter().copied().find(|k| k == name)))?,
        Some(_) => return Err(Refusal::Malformed("alg is not a string")),
        None => return Err(Refusal::Malformed("the header has no alg")),
    };
    // RFC 7515 §4.1.11: extensions listed in crit must be understood; we implement none.
    if header.contains_key("crit") {
        return Err(Refusal::CriticalHeader);
    }
    // RFC 7797: only the default, base64url-encoded payload.
    if !matches!(header.get("b64"), None | Some(Value::Bool(true))) {
        return Err(Refusal::Malformed("unencoded payloads (b64) are not supported"));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(Refusal::Malformed("kid is not a string")),
    };
    if signature.is_empty() {
        return Err(Refusal::Malformed("the signature is missing"));
    }
    if URL_SAFE_NO_PAD.decode(signature).is_err() {
        return Err(Refusal::Malformed("the signature is not base64url"));
    }
    let payload =
        URL_SAFE_NO_PAD.decode(payload_part).map_err(|_| Refusal::Malformed("the payload is not base64url"))?;
    let signing_input = &token[..header_part.len() + 1 + payload_part.len()];
    Ok(Jws { alg, kid, signing_input, signature, payload })
}

/// A trusted verification key, bound to its algorithm(s).
#[derive(Clone)]
struct Key {
    kid: Option<String>,
    /// Never empty; every one fits `key_type`.
    algorithms: Vec<JwtAlgorithm>,
    key_type: KeyType,
    decoding: DecodingKey,
    /// Where it came from, for logs.
    origin: Arc<str>,
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Key")
            .field("kid", &self.kid)
            .field("type", &self.key_type.describe())
            .field("algorithms", &self.algorithms)
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Key {
    fn new(
        key_type: KeyType,
        decoding: DecodingKey,
        algorithms: Vec<JwtAlgorithm>,
        kid: Option<String>,
        origin: Arc<str>,
    ) -> Result<Key, String> {
        let Some(&first) = algorithms.first() else { return Err("no algorithm".to_owned()) };
        if let Some(alg) = algorithms.iter().find(|a| a.key_type() != key_type) {
            return Err(format!("{} keys cannot verify {alg}", key_type.describe()));
        }
        // Building a verifier parses the key: a point off the curve fails here, not later.
        if let Err(e) = jsonwebtoken::crypto::verify("", b"", &decoding, first.to_jsonwebtoken()) {
            return Err(format!("not a valid {} public key ({e})", key_type.describe()));
        }
        Ok(Key { kid, algorithms, key_type, decoding, origin })
    }

    fn rsa(
        n: &[u8],
        e: &[u8],
        algorithms: Vec<JwtAlgorithm>,
        kid: Option<String>,
        origin: Arc<str>,
    ) -> Result<Key, String> {
        let n = strip_leading_zeros(n);
        let e = strip_leading_zeros(e);
        let bits = n.first().map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
        if bits < MIN_RSA_BITS {
            return Err(format!("an RSA key of {bits} bits is too short (at least {MIN_RSA_BITS})"));
        }
        if bits > MAX_RSA_BITS {
            return Err(format!("an RSA key of {bits} bits is too long (at most {MAX_RSA_BITS})"));
        }
        if n.last().is_some_and(|low| low & 1 == 0) {
            return Err("the RSA modulus is even".to_owned());
        }
        let exponent = if e.len() <= 8 { e.iter().fold(0u64, |acc, &b| (acc << 8) | u64::from(b)) } else { u64::MAX };
        if exponent < 3 || exponent & 1 == 0 || exponent >= 1 << 33 {
            return Err("the RSA public exponent is not an odd number from 3 to 2^33".to_owned());
        }
        if has_roca_fingerprint(n) {
            return Err("the RSA modulus has the ROCA fingerprint (CVE-2017-15361): the key is weak".to_owned());
        }
        Key::new(KeyType::Rsa, DecodingKey::from_rsa_raw_components(n, e), algorithms, kid, origin)
    }

    fn ec(
        key_type: KeyType,
        x: &[u8],
        y: &[u8],
        algorithms: Vec<JwtAlgorithm>,
        kid: Option<String>,
        origin: Arc<str>,
    ) -> Result<Key, String> {
        let len = key_type.coordinate_len();
        if x.len() != len || y.len() != len {
            return Err(format!("{} coordinates are {len} bytes each", key_type.describe()));
        }
        let mut point = Vec::with_capacity(1 + 2 * len);
        point.push(0x04);
        point.extend_from_slice(x);
        point.extend_from_slice(y);
        Key::new(key_type, DecodingKey::from_ec_der(&point), algorithms, kid, origin)
    }

    fn ed25519(x: &[u8], algorithms: Vec<JwtAlgorithm>, kid: Option<String>, origin: Arc<str>) -> Result<Key, String> {
        if x.len() != 32 {
            return Err("an Ed25519 public key is 32 bytes".to_owned());
        }
        Key::new(KeyType::Ed25519, DecodingKey::from_ed_der(x), algorithms, kid, origin)
    }

    fn hmac(secret: &[u8], algorithm: JwtAlgorithm, kid: Option<String>, origin: Arc<str>) -> Result<Key, String> {
        if algorithm.key_type() != KeyType::Hmac {
            return Err(format!("an HMAC secret cannot verify {algorithm}"));
        }
        let min = algorithm.min_secret_bytes();
        if secret.len() < min {
            return Err(format!(
                "an {algorithm} secret must be at least {min} bytes (RFC 7518 §3.2); this one has {}",
                secret.len()
            ));
        }
        let decoding = DecodingKey::from_secret(secret).map_err(|e| e.to_string())?;
        Key::new(KeyType::Hmac, decoding, vec![algorithm], kid, origin)
    }

    fn from_pem(pem: &[u8], algorithm: JwtAlgorithm, kid: Option<String>, origin: Arc<str>) -> Result<Key, String> {
        if algorithm.key_type() == KeyType::Hmac {
            return Err(format!("{algorithm} takes an HMAC secret (hmac_secret), not a PEM key"));
        }
        let text = std::str::from_utf8(pem).map_err(|_| "not PEM text".to_owned())?;
        let (label, der) = pem_block(text)?;
        let (key_type, key_bytes) = match label {
            "PUBLIC KEY" => spki(&der)?,
            "RSA PUBLIC KEY" => (KeyType::Rsa, der.as_slice()),
            label if label.contains("PRIVATE KEY") => {
                return Err(
                    "this is a private key: configure the public key (openssl pkey -in key.pem -pubout)".to_owned()
                );
            }
            "CERTIFICATE" => {
                return Err(
                    "certificates are not accepted: configure the public key (openssl x509 -in cert.pem -pubkey -noout)"
                        .to_owned(),
                );
            }
            other => return Err(format!("a PEM {:?} block is not a public key", short(other))),
        };
        if key_type != algorithm.key_type() {
            return Err(format!(
                "{} keys cannot verify {algorithm} (it needs {} keys)",
                key_type.describe(),
                algorithm.key_type().describe()
            ));
        }
        let algorithms = vec![algorithm];
        match key_type {
            KeyType::Rsa => {
                let (n, e) = der_rsa_public_key(key_bytes).ok_or("not a DER RSA public key")?;
                Key::rsa(n, e, algorithms, kid, origin)
            }
            KeyType::P256 | KeyType::P384 => {
                let len = key_type.coordinate_len();
                match key_bytes.split_first() {
                    Some((0x04, xy)) if xy.len() == 2 * len => {
                        let (x, y) = xy.split_at(len);
                        Key::ec(key_type, x, y, algorithms, kid, origin)
                    }
                    _ => Err("only uncompressed EC points are supported".to_owned()),
                }
            }
            KeyType::Ed25519 => Key::ed25519(key_bytes, algorithms, kid, origin),
            KeyType::Hmac => Err("not a public key".to_owned()),
        }
    }

    /// Keeps only the algorithms in `allowed` (when given); fails if none is left.
    fn restrict(mut self, allowed: Option<&[JwtAlgorithm]>) -> Result<Key, String> {
        if let Some(allowed) = allowed {
            let before = self.algorithms.clone();
            self.algorithms.retain(|a| allowed.contains(a));
            if self.algorithms.is_empty() {
                let names: Vec<&str> = before.iter().map(|a| a.as_str()).collect();
                return Err(format!("its algorithm ({}) is not in algorithms()", names.join(", ")));
            }
        }
        Ok(self)
    }

    fn verifies(&self, jws: &Jws<'_>) -> bool {
        match jsonwebtoken::crypto::verify(
            jws.signature,
            jws.signing_input.as_bytes(),
            &self.decoding,
            jws.alg.to_jsonwebtoken(),
        ) {
            Ok(valid) => valid,
            Err(e) => {
                tracing::debug!(key = %self.origin, "JWT: verifying with a key failed: {e}");
                false
            }
        }
    }
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

/// ROCA (CVE-2017-15361): moduli made by the vulnerable Infineon library are, modulo each
/// small prime r, in the subgroup generated by 65537. A random modulus passes all these
/// tests with negligible probability.
fn has_roca_fingerprint(n: &[u8]) -> bool {
    const PRIMES: [u32; 38] = [
        3, 5, 7, 11, 13, 17, 19, 23, 29, 31, 37, 41, 43, 47, 53, 59, 61, 67, 71, 73, 79, 83, 89, 97, 101, 103, 107,
        109, 113, 127, 131, 137, 139, 149, 151, 157, 163, 167,
    ];
    PRIMES.iter().all(|&r| {
        let residue = n.iter().fold(0u32, |acc, &b| (acc * 256 + u32::from(b)) % r);
        let generator = 65537 % r;
        let mut power = 1;
        loop {
            if power == residue {
                return true;
            }
            power = power * generator % r;
            if power == 1 {
                return false;
            }
        }
    })
}

/// The first PEM block of `text`: its label and its DER bytes.
fn pem_block(text: &str) -> Result<(&str, Vec<u8>), String> {
    const BEGIN: &str = "-----BEGIN ";
    let start = text.find(BEGIN).ok_or("no PEM block (-----BEGIN ...)")?;
    let rest = &text[start + BEGIN.len()..];
    let label_end = rest.find("-----").ok_or("a malformed PEM header")?;
    let label = &rest[..label_end];
    let body = &rest[label_end + 5..];
    let end = body.find(&format!("-----END {label}-----")).ok_or("no PEM end line")?;
    let base64: String = body[..end].chars().filter(|c| !c.is_ascii_whitespace()).collect();
    let der = STANDARD.decode(base64).map_err(|_| "the PEM body is not base64".to_owned())?;
    Ok((label, der))
}

/// One DER TLV: tag, contents, rest.
fn der(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (len, rest) = rest.split_at(count);
        (len.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b)), rest)
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_ED25519: &[u8] = &[0x2b, 0x65, 0x70];

/// A SubjectPublicKeyInfo (RFC 5280): the key's type and its key bytes (PKCS #1 for RSA,
/// a SEC1 point for EC, 32 bytes for Ed25519).
fn spki(input: &[u8]) -> Result<(KeyType, &[u8]), String> {
    let malformed = || "a malformed SubjectPublicKeyInfo".to_owned();
    let (0x30, body, []) = der(input).ok_or_else(malformed)? else { return Err(malformed()) };
    let (0x30, algorithm, rest) = der(body).ok_or_else(malformed)? else { return Err(malformed()) };
    let (0x03, bits, []) = der(rest).ok_or_else(malformed)? else { return Err(malformed()) };
    let (0x06, oid, parameters) = der(algorithm).ok_or_else(malformed)? else { return Err(malformed()) };
    let Some((0, key)) = bits.split_first() else { return Err(malformed()) };
    let key_type = match oid {
        OID_RSA => KeyType::Rsa,
        OID_ED25519 => KeyType::Ed25519,
        OID_EC => match der(parameters) {
            Some((0x06, OID_P256, [])) => KeyType::P256,
            Some((0x06, OID_P384, [])) => KeyType::P384,
            _ => return Err("an EC key on a curve other than P-256 and P-384".to_owned()),
        },
        _ => return Err("an unsupported public key type (RSA, EC P-256/P-384 and Ed25519 are supported)".to_owned()),
    };
    Ok((key_type, key))
}

/// PKCS #1 RSAPublicKey: `SEQUENCE { INTEGER n, INTEGER e }`.
fn der_rsa_public_key(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (0x30, body, []) = der(input)? else { return None };
    let (0x02, n, rest) = der(body)? else { return None };
    let (0x02, e, []) = der(rest)? else { return None };
    Some((n, e))
}

/// The usable keys of a JWK or JWK Set, and why the others were skipped.
struct KeyLoad {
    keys: Vec<Arc<Key>>,
    skipped: Vec<String>,
}

/// Parses one JWK or a JWK Set. The whole document is refused when it is not JSON,
/// too large, holds more than [`MAX_JWKS_KEYS`] keys, holds private or symmetric key
/// material, or two usable keys share a `kid`; single keys the verifier cannot use are
/// skipped.
fn parse_jwk_document(bytes: &[u8], origin: &Arc<str>, allowed: Option<&[JwtAlgorithm]>) -> Result<KeyLoad, String> {
    if bytes.len() > MAX_JWKS_BYTES {
        return Err(format!("larger than {MAX_JWKS_BYTES} bytes"));
    }
    let document: Value = serde_json::from_slice(bytes).map_err(|e| format!("not JSON ({e})"))?;
    let entries: Vec<&Value> = match &document {
        Value::Object(members) => match members.get("keys") {
            Some(Value::Array(keys)) => keys.iter().collect(),
            Some(_) => return Err("\"keys\" is not an array".to_owned()),
            None if members.contains_key("kty") => vec![&document],
            None => return Err("neither a JWK nor a JWK Set".to_owned()),
        },
        _ => return Err("not a JSON object".to_owned()),
    };
    if entries.len() > MAX_JWKS_KEYS {
        return Err(format!("{} keys, more than {MAX_JWKS_KEYS}", entries.len()));
    }
    let mut jwks = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let Value::Object(jwk) = entry else { return Err(format!("key {i} is not a JSON object")) };
        if jwk.get("kty").and_then(Value::as_str) == Some("oct") {
            return Err(format!(
                "key {i} is a symmetric (oct) key: HMAC secrets are accepted only through hmac_secret(), never from a JWK"
            ));
        }
        if let Some(member) = SECRET_JWK_MEMBERS.iter().find(|m| jwk.contains_key(**m)) {
            return Err(format!(
                "key {i} holds private key material ({member:?}): publish and configure public keys only"
            ));
        }
        jwks.push(jwk);
    }
    let mut load = KeyLoad { keys: Vec::new(), skipped: Vec::new() };
    for (i, jwk) in jwks.into_iter().enumerate() {
        match parse_jwk(jwk, origin).and_then(|key| key.restrict(allowed)) {
            Ok(key) => load.keys.push(Arc::new(key)),
            Err(why) => {
                let kid = jwk.get("kid").and_then(Value::as_str).map(|k| format!(" (kid {:?})", short(k)));
                load.skipped.push(format!("key {i}{}: {why}", kid.unwrap_or_default()));
            }
        }
    }
    let mut kids = HashSet::new();
    for kid in load.keys.iter().filter_map(|k| k.kid.as_deref()) {
        if !kids.insert(kid) {
            return Err(format!("two keys have the key id {:?}", short(kid)));
        }
    }
    Ok(load)
}

fn parse_jwk(jwk: &Map<String, Value>, origin: &Arc<str>) -> Result<Key, String> {
    let text = |name: &str| -> Result<Option<&str>, String> {
        match jwk.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(format!("{name} is not a string")),
        }
    };
    let bytes = |name: &str| -> Result<Vec<u8>, String> {
        let value = text(name)?.ok_or_else(|| format!("no {name}"))?;
        URL_SAFE_NO_PAD.decode(value.trim_end_matches('=')).map_err(|_| format!("{name} is not base64url"))
    };
    let kid = text("kid")?.map(str::to_owned);
    if text("use")?.is_some_and(|u| u != "sig") {
        return Err("not a signature key (use is not \"sig\")".to_owned());
    }
    match jwk.get("key_ops") {
        None => {}
        Some(Value::Array(ops)) if ops.iter().any(|op| op.as_str() == Some("verify")) => {}
        Some(_) => return Err("key_ops does not include \"verify\"".to_owned()),
    }
    let key_type = match text("kty")?.ok_or("no kty")? {
        "RSA" => KeyType::Rsa,
        "EC" => match text("crv")?.ok_or("no crv")? {
            "P-256" => KeyType::P256,
            "P-384" => KeyType::P384,
            other => return Err(format!("unsupported curve {:?}", short(other))),
        },
        "OKP" => match text("crv")?.ok_or("no crv")? {
            "Ed25519" => KeyType::Ed25519,
            other => return Err(format!("unsupported curve {:?}", short(other))),
        },
        other => return Err(format!("unsupported key type {:?}", short(other))),
    };
    let algorithm = match text("alg")? {
        Some(name) => JwtAlgorithm::from_name(name).ok_or_else(|| format!("unsupported alg {:?}", short(name)))?,
        None => key_type.default_algorithm().ok_or("no alg")?,
    };
    if algorithm.key_type() != key_type {
        return Err(format!("{} keys cannot verify {algorithm}", key_type.describe()));
    }
    let algorithms = vec![algorithm];
    let origin = origin.clone();
    match key_type {
        KeyType::Rsa => Key::rsa(&bytes("n")?, &bytes("e")?, algorithms, kid, origin),
        KeyType::P256 | KeyType::P384 => Key::ec(key_type, &bytes("x")?, &bytes("y")?, algorithms, kid, origin),
        KeyType::Ed25519 => Key::ed25519(&bytes("x")?, algorithms, kid, origin),
        KeyType::Hmac => Err("not a public key".to_owned()),
    }
}

/// At most 40 characters of a configuration or JWKS value, for messages.
fn short(text: &str) -> String {
    match text.char_indices().nth(40) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text.to_owned(),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// What a caller of [`JwksSource::ensure`] needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// A usable key set: fetch only if there is none (never fetched, or too old).
    IfUnusable,
    /// A newer key set: an unknown `kid`, or the periodic refresh.
    Again,
}

/// HTTP and limits shared by the JWKS sources.
struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
    min_refetch: Duration,
    refresh: Duration,
    max_age: Duration,
    algorithms: Option<Vec<JwtAlgorithm>>,
}

impl Fetcher {
    async fn fetch(&self, url: &reqwest::Url, origin: &Arc<str>) -> Result<KeyLoad, String> {
        let body = tokio::time::timeout(self.timeout, self.download(url))
            .await
            .map_err(|_| format!("no answer within {:?}", self.timeout))??;
        parse_jwk_document(&body, origin, self.algorithms.as_deref())
    }

    async fn download(&self, url: &reqwest::Url) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(url.clone())
            .header(reqwest::header::ACCEPT, "application/jwk-set+json, application/json")
            .send()
            .await
            .map_err(|e| error_chain(&e.without_url()))?;
        let status = response.status();
        if !status.is_success() {
            return Err(format!("HTTP status {status}"));
        }
        let too_large = || format!("the key set is larger than {MAX_JWKS_BYTES} bytes");
        if response.content_length().is_some_and(|len| len > MAX_JWKS_BYTES as u64) {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| error_chain(&e.without_url()))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// One JWKS URL and its cached key set.
struct JwksSource {
    url: reqwest::Url,
    origin: Arc<str>,
    state: Mutex<JwksState>,
    /// Held while fetching: one fetch in flight per URL, which waiters share.
    gate: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Default)]
struct JwksState {
    /// The last key set fetched.
    keys: Option<Arc<[Arc<Key>]>>,
    fetched_at: Option<Instant>,
    attempted_at: Option<Instant>,
    /// Fetch attempts finished, successful or not.
    attempts: u64,
}

impl JwksSource {
    fn new(url: reqwest::Url) -> JwksSource {
        // Logs and Debug name the URL without any credentials in it.
        let mut shown = url.clone();
        let _ = shown.set_password(None);
        let _ = shown.set_username("");
        let origin = Arc::from(format!("JWKS {shown}").as_str());
        JwksSource { url, origin, state: Mutex::default(), gate: Arc::new(tokio::sync::Mutex::new(())) }
    }

    /// The key set, if one was fetched within `max_age`.
    fn current(&self, max_age: Duration) -> Option<Arc<[Arc<Key>]>> {
        let state = lock(&self.state);
        let fresh = state.fetched_at.is_some_and(|at| at.elapsed() <= max_age);
        if fresh { state.keys.clone() } else { None }
    }

    /// Fetches the key set if `want` calls for it and the last attempt is at least
    /// `min_refetch` old. Concurrent callers share one fetch: who waited for the gate
    /// while another fetched takes that result. The fetch runs in a task of its own, so
    /// it finishes (and its result is kept) even when the caller gives up first, say on
    /// the gateway's `auth_timeout`.
    async fn ensure(self: &Arc<JwksSource>, fetcher: &Arc<Fetcher>, want: Want) {
        let seen = {
            let state = lock(&self.state);
            let usable = state.keys.is_some() && state.fetched_at.is_some_and(|at| at.elapsed() <= fetcher.max_age);
            if want == Want::IfUnusable && usable {
                return;
            }
            if state.attempted_at.is_some_and(|at| at.elapsed() < fetcher.min_refetch) {
                return;
            }
            state.attempts
        };
        let gate = self.gate.clone().lock_owned().await;
        if lock(&self.state).attempts != seen {
            return;
        }
        let fetch = {
            let (source, fetcher) = (self.clone(), fetcher.clone());
            async move {
                let _gate = gate;
                source.fetch(&fetcher).await;
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let _ = runtime.spawn(fetch).await;
            }
            Err(_) => fetch.await,
        }
    }

    async fn fetch(&self, fetcher: &Fetcher) {
        let started = Instant::now();
        let result = fetcher.fetch(&self.url, &self.origin).await;
        let mut state = lock(&self.state);
        state.attempts += 1;
        state.attempted_at = Some(started);
        match result {
            Ok(load) => {
                for skipped in &load.skipped {
                    tracing::warn!("JWT: {}: skipping {skipped}", self.origin);
                }
                tracing::debug!("JWT: {}: {} keys", self.origin, load.keys.len());
                state.keys = Some(load.keys.into());
                state.fetched_at = Some(Instant::now());
            }
            Err(why) => {
                let keeping = if state.keys.is_some() { "keeping the last key set" } else { "tokens are refused" };
                tracing::warn!("JWT: {}: fetch failed, {keeping}: {why}", self.origin);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::convert::Infallible;
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use bytes::Bytes;
    use http_body_util::{Either, Full, StreamBody};
    use hyper::body::Frame;
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;

    const ISSUER: &str = "https://issuer.example";
    const AUDIENCE: &str = "kafkasocks";
    const HMAC_SECRET: &str = "an HMAC secret of at least 32 bytes, for tests";

    // --- keys, made at test time with the openssl command -----------------------------------

    fn openssl(args: &[&str], input: Option<&[u8]>) -> Vec<u8> {
        let mut child = Command::new("openssl")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("these tests make their keys with the openssl command (apt-get install openssl)");
        let mut stdin = child.stdin.take().expect("stdin");
        if let Some(input) = input {
            stdin.write_all(input).expect("writing to openssl");
        }
        drop(stdin);
        let out = child.wait_with_output().expect("openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
        out.stdout
    }

    struct TestKey {
        alg: JwtAlgorithm,
        private: Vec<u8>,
        public: Vec<u8>,
    }

    impl TestKey {
        fn generate(alg: JwtAlgorithm, genpkey: &[&str]) -> TestKey {
            let private = openssl(&[&["genpkey"], genpkey].concat(), None);
            let public = openssl(&["pkey", "-pubout"], Some(&private));
            TestKey { alg, private, public }
        }

        fn encoding(&self) -> EncodingKey {
            match self.alg.key_type() {
                KeyType::Rsa => EncodingKey::from_rsa_pem(&self.private),
                KeyType::P256 | KeyType::P384 => EncodingKey::from_ec_pem(&self.private),
                KeyType::Ed25519 => EncodingKey::from_ed_pem(&self.private),
                KeyType::Hmac => EncodingKey::from_secret(&self.private),
            }
            .expect("encoding key")
        }

        /// A token signed with this key, `alg` its own.
        fn token(&self, kid: Option<&str>, claims: &Value) -> String {
            self.sign(self.alg, header(self.alg, kid), claims)
        }

        fn sign(&self, alg: JwtAlgorithm, header: Value, claims: &Value) -> String {
            sign_token(&header, claims, &self.encoding(), alg)
        }

        /// The public key as a JWK (with `alg` and `use`).
        fn jwk(&self, kid: &str) -> Value {
            let jwk =
                jsonwebtoken::jwk::Jwk::from_encoding_key(&self.encoding(), self.alg.to_jsonwebtoken()).expect("jwk");
            let mut value = serde_json::to_value(jwk).expect("jwk json");
            value["kid"] = kid.into();
            value["use"] = "sig".into();
            value
        }
    }

    struct TestKeys {
        rsa: TestKey,
        rsa_other: TestKey,
        p256: TestKey,
        p384: TestKey,
        ed25519: TestKey,
    }

    fn keys() -> &'static TestKeys {
        static KEYS: OnceLock<TestKeys> = OnceLock::new();
        KEYS.get_or_init(|| {
            let rsa = ["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"];
            TestKeys {
                rsa: TestKey::generate(JwtAlgorithm::Rs256, &rsa),
                rsa_other: TestKey::generate(JwtAlgorithm::Rs256, &rsa),
                p256: TestKey::generate(
                    JwtAlgorithm::Es256,
                    &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
                ),
                p384: TestKey::generate(
                    JwtAlgorithm::Es384,
                    &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384"],
                ),
                ed25519: TestKey::generate(JwtAlgorithm::EdDsa, &["-algorithm", "ED25519"]),
            }
        })
    }

    fn header(alg: JwtAlgorithm, kid: Option<&str>) -> Value {
        let mut header = json!({"alg": alg.as_str(), "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        header
    }

    fn sign_token(header: &Value, claims: &Value, key: &EncodingKey, alg: JwtAlgorithm) -> String {
        let input =
            format!("{}.{}", URL_SAFE_NO_PAD.encode(header.to_string()), URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg.to_jsonwebtoken()).expect("sign");
        format!("{input}.{signature}")
    }

    fn hmac_token(secret: &[u8], header: &Value, claims: &Value) -> String {
        sign_token(header, claims, &EncodingKey::from_secret(secret).expect("secret"), JwtAlgorithm::Hs256)
    }

    fn now() -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
    }

    fn claims() -> Value {
        json!({
            "iss": ISSUER, "aud": AUDIENCE, "sub": "ada", "exp": now() + 600, "iat": now(),
            "rooms": ["r1", "r2"], "realm": {"roles": ["admin"]},
        })
    }

    fn claims_with(changes: Value) -> Value {
        let mut claims = claims();
        for (name, value) in changes.as_object().expect("object") {
            if value.is_null() {
                claims.as_object_mut().expect("object").remove(name);
            } else {
                claims[name] = value.clone();
            }
        }
        claims
    }

    fn config() -> JwtConfig {
        JwtConfig::new().issuer(ISSUER).audience(AUDIENCE)
    }

    fn rsa_auth() -> JwtAuthenticator {
        config().key_pem(&keys().rsa.public, JwtAlgorithm::Rs256).key_id("a").build().expect("build")
    }

    async fn check(auth: &JwtAuthenticator, token: &str) -> Result<Principal, Refusal> {
        Inner::authenticate(&auth.inner, token).await
    }

    fn config_error(config: JwtConfig) -> String {
        match config.build() {
            Err(Error::Config(message)) => message,
            Err(other) => panic!("not a configuration error: {other:?}"),
            Ok(auth) => panic!("built {auth:?}"),
        }
    }

    // --- accepting ---------------------------------------------------------------------------

    #[tokio::test]
    async fn each_algorithm_gives_a_principal_with_the_claims() {
        let k = keys();
        let auth = config()
            .key_pem(&k.rsa.public, JwtAlgorithm::Rs256)
            .key_id("rs")
            .key_pem(&k.rsa_other.public, JwtAlgorithm::Ps256)
            .key_id("ps")
            .key_pem(&k.p256.public, JwtAlgorithm::Es256)
            .key_id("es256")
            .key_pem(&k.p384.public, JwtAlgorithm::Es384)
            .key_id("es384")
            .key_pem(&k.ed25519.public, JwtAlgorithm::EdDsa)
            .key_id("ed")
            .hmac_secret(Secret::new(HMAC_SECRET), JwtAlgorithm::Hs256)
            .key_id("hs")
            .build()
            .expect("build");
        let claims = claims();
        let ps = TestKey { alg: JwtAlgorithm::Ps256, private: k.rsa_other.private.clone(), public: Vec::new() };
        let tokens = [
            k.rsa.token(Some("rs"), &claims),
            ps.token(Some("ps"), &claims),
            k.p256.token(Some("es256"), &claims),
            k.p384.token(Some("es384"), &claims),
            k.ed25519.token(Some("ed"), &claims),
            hmac_token(HMAC_SECRET.as_bytes(), &header(JwtAlgorithm::Hs256, Some("hs")), &claims),
        ];
        let exp = UNIX_EPOCH + Duration::from_secs(claims["exp"].as_u64().expect("exp"));
        for token in &tokens {
            let principal = check(&auth, token).await.expect("accepted");
            assert_eq!(principal.subject(), "ada");
            assert_eq!(principal.expiry(), Some(exp));
            assert_eq!(principal.claims().strings("rooms"), ["r1", "r2"]);
            assert_eq!(principal.claims().strings("/realm/roles"), ["admin"]);
            assert_eq!(principal.claims().str("iss"), Some(ISSUER));
        }
        // Through the trait, as the gateway calls it.
        let handshake = Handshake::in_process();
        let principal = auth.authenticate(&tokens[0], &handshake).await.expect("accepted");
        assert_eq!(principal.subject(), "ada");
        let refused = auth.authenticate("", &handshake).await.expect_err("refused");
        assert_eq!(refused.code(), crate::protocol::Code::Unauthenticated);
        assert_eq!(refused.message(), "a token is required");
    }

    #[tokio::test]
    async fn keys_without_a_kid_check_tokens_without_one() {
        let k = keys();
        let auth = config().key_pem(&k.p256.public, JwtAlgorithm::Es256).build().expect("build");
        assert!(check(&auth, &k.p256.token(None, &claims())).await.is_ok());
        assert_eq!(check(&auth, &k.p256.token(Some("k1"), &claims())).await.err(), Some(Refusal::UnknownKey));
        // ... and a key with a kid only tokens with that kid.
        let auth = config().key_pem(&k.p256.public, JwtAlgorithm::Es256).key_id("k1").build().expect("build");
        assert_eq!(check(&auth, &k.p256.token(None, &claims())).await.err(), Some(Refusal::UnknownKey));
        assert!(check(&auth, &k.p256.token(Some("k1"), &claims())).await.is_ok());
    }

    #[tokio::test]
    async fn subject_claim_is_configurable_and_must_be_a_non_empty_string() {
        let k = keys();
        let auth = config().key_pem(&k.rsa.public, JwtAlgorithm::Rs256).subject_claim("/user/id").build().expect("b");
        let token = k.rsa.token(None, &claims_with(json!({"user": {"id": "u-7"}})));
        assert_eq!(check(&auth, &token).await.expect("accepted").subject(), "u-7");
        let auth = config().key_pem(&k.rsa.public, JwtAlgorithm::Rs256).build().expect("build");
        for sub in [json!(null), json!(""), json!(7), json!(["ada"])] {
            let token = k.rsa.token(None, &claims_with(json!({ "sub": sub })));
            assert_eq!(check(&auth, &token).await.err(), Some(Refusal::NoSubject), "sub {sub}");
        }
    }

    // --- attacks -----------------------------------------------------------------------------

    #[tokio::test]
    async fn alg_none_is_refused_with_or_without_a_signature() {
        let auth = rsa_auth();
        let valid = keys().rsa.token(Some("a"), &claims());
        let signature = valid.rsplit('.').next().expect("signature");
        let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
        for alg in ["none", "None", "NONE"] {
            for kid in [None, Some("a")] {
                let mut header = json!({ "alg": alg });
                if let Some(kid) = kid {
                    header["kid"] = kid.into();
                }
                let head = URL_SAFE_NO_PAD.encode(header.to_string());
                for token in [format!("{head}.{payload}."), format!("{head}.{payload}.{signature}")] {
                    assert_eq!(check(&auth, &token).await.err(), Some(Refusal::Unsigned), "{header}");
                }
            }
        }
        let status = auth.authenticate(&format!("eyJhbGciOiJub25lIn0.{payload}."), &Handshake::in_process()).await;
        assert_eq!(status.expect_err("refused").message(), "unsigned tokens (alg none) are not accepted");
    }

    #[tokio::test]
    async fn hmac_tokens_keyed_with_a_public_key_are_refused() {
        let k = keys();
        for (public, alg) in [(&k.rsa, JwtAlgorithm::Rs256), (&k.p256, JwtAlgorithm::Es256)] {
            // The attacker knows the public key and uses its PEM bytes (and its JWK text)
            // as the HMAC secret: the key is bound to its own algorithm and takes no HS256.
            let jwk = public.jwk("a");
            let as_jwk = json!({ "keys": [jwk] }).to_string();
            for auth in [
                config().key_pem(&public.public, alg).build().expect("build"),
                config().key_pem(&public.public, alg).key_id("a").build().expect("build"),
                config().key_jwk(&as_jwk).build().expect("build"),
            ] {
                for secret in [public.public.as_slice(), jwk.to_string().as_bytes()] {
                    for kid in [None, Some("a")] {
                        let token = hmac_token(secret, &header(JwtAlgorithm::Hs256, kid), &claims());
                        match check(&auth, &token).await {
                            Err(Refusal::AlgorithmNotAllowed(JwtAlgorithm::Hs256) | Refusal::UnknownKey) => {}
                            other => panic!("HS256 over a {alg} key: {other:?}"),
                        }
                    }
                }
            }
            // With an HMAC secret configured beside it, the public key still takes no HS256,
            // and the secret's key does not verify a MAC made with the public key.
            let auth = config()
                .key_pem(&public.public, alg)
                .key_id("pk")
                .hmac_secret(Secret::new(HMAC_SECRET), JwtAlgorithm::Hs256)
                .key_id("hs")
                .build()
                .expect("build");
            let forged = hmac_token(&public.public, &header(JwtAlgorithm::Hs256, Some("pk")), &claims());
            assert_eq!(check(&auth, &forged).await.err(), Some(Refusal::AlgorithmNotAllowed(JwtAlgorithm::Hs256)));
            let forged = hmac_token(&public.public, &header(JwtAlgorithm::Hs256, Some("hs")), &claims());
            assert_eq!(check(&auth, &forged).await.err(), Some(Refusal::BadSignature));
            let status = auth.authenticate(&forged, &Handshake::in_process()).await.expect_err("refused");
            assert_eq!(status.message(), "bad signature");
        }
    }

    #[tokio::test]
    async fn expiry_is_checked_with_the_leeway() {
        let k = keys();
        let auth = rsa_auth();
        let at = |exp: Value| k.rsa.token(Some("a"), &claims_with(json!({ "exp": exp })));
        assert!(check(&auth, &at(json!(now() - 10))).await.is_ok(), "within the 30 s leeway");
        assert_eq!(check(&auth, &at(json!(now() - 60))).await.err(), Some(Refusal::Expired));
        assert_eq!(
            check(&auth, &at(json!(now() - 60))).await.err().map(|r| r.to_string()).as_deref(),
            Some("token expired")
        );
        assert_eq!(check(&auth, &at(json!("soon"))).await.err(), Some(Refusal::InvalidClaim("exp")));
        assert_eq!(check(&auth, &at(json!(1e300))).await.err(), Some(Refusal::InvalidClaim("exp")));
        assert!(check(&auth, &at(json!(now() as f64 + 100.5))).await.is_ok(), "NumericDate may be fractional");
        let strict = config().key_pem(&k.rsa.public, JwtAlgorithm::Rs256).key_id("a").leeway(Duration::ZERO);
        assert_eq!(check(&strict.build().expect("b"), &at(json!(now() - 10))).await.err(), Some(Refusal::Expired));

        let no_exp = k.rsa.token(Some("a"), &claims_with(json!({"exp": null})));
        assert_eq!(check(&auth, &no_exp).await.err(), Some(Refusal::MissingClaim("exp")));
        let lax = config().key_pem(&k.rsa.public, JwtAlgorithm::Rs256).key_id("a").require_exp(false);
        let principal = check(&lax.build().expect("build"), &no_exp).await.expect("accepted");
        assert_eq!(principal.expiry(), None);
    }

    #[tokio::test]
    async fn not_before_and_issued_at_in_the_future_are_refused() {
        let k = keys();
        let auth = rsa_auth();
        let with = |changes: Value| k.rsa.token(Some("a"), &claims_with(changes));
        assert_eq!(check(&auth, &with(json!({"nbf": now() + 120}))).await.err(), Some(Refusal::NotYetValid));
        assert!(check(&auth, &with(json!({"nbf": now() + 10}))).await.is_ok(), "within the leeway");
        assert!(check(&auth, &with(json!({"nbf": now() - 10}))).await.is_ok());
        assert_eq!(check(&auth, &with(json!({"iat": now() + 120}))).await.err(), Some(Refusal::IssuedInFuture));
        assert!(check(&auth, &with(json!({"iat": now() + 10}))).await.is_ok());
        assert_eq!(check(&auth, &with(json!({"nbf": "now"}))).await.err(), Some(Refusal::InvalidClaim("nbf")));
    }

    #[tokio::test]
    async fn the_audience_is_checked() {
        let k = keys();
        let auth = rsa_auth();
        let aud = |aud: Value| k.rsa.token(Some("a"), &claims_with(json!({ "aud": aud })));
        assert_eq!(check(&auth, &aud(json!("other"))).await.err(), Some(Refusal::WrongAudience));
        assert_eq!(check(&auth, &aud(json!(null))).await.err(), Some(Refusal::MissingClaim("aud")));
        assert_eq!(check(&auth, &aud(json!(["x", "y"]))).await.err(), Some(Refusal::WrongAudience));
        assert_eq!(check(&auth, &aud(json!([]))).await.err(), Some(Refusal::WrongAudience));
        assert!(check(&auth, &aud(json!(["x", AUDIENCE]))).await.is_ok());
        assert_eq!(check(&auth, &aud(json!(7))).await.err(), Some(Refusal::InvalidClaim("aud")));
        assert_eq!(check(&auth, &aud(json!([AUDIENCE, 7]))).await.err(), Some(Refusal::InvalidClaim("aud")));
        let two = config().audience("second").key_pem(&k.rsa.public, JwtAlgorithm::Rs256).key_id("a");
        assert!(check(&two.build().expect("build"), &aud(json!("second"))).await.is_ok());
        let any = JwtConfig::new().skip_audience_check().key_pem(&k.rsa.public, JwtAlgorithm::Rs256).key_id("a");
        let any = any.build().expect("build");
        assert!(check(&any, &aud(json!("other"))).await.is_ok());
        assert!(check(&any, &aud(json!(null))).await.is_ok());
    }

    #[tokio::test]
    async fn the_issuer_is_checked() {
        let k = keys();
        let auth = rsa_auth();
        let iss = |iss: Value| k.rsa.token(Some("a"), &claims_with(json!({ "iss": iss })));
        assert_eq!(check(&auth, &iss(json!("https://evil.example"))).await.err(), Some(Refusal::WrongIssuer));
        assert_eq!(check(&auth, &iss(json!(null))).await.err(), Some(Refusal::MissingClaim("iss")));
        assert_eq!(
            check(&auth, &iss(json!(["https://issuer.example"]))).await.err(),
            Some(Refusal::InvalidClaim("iss"))
        );
        let two = config().issuer("https://second.example").key_pem(&k.rsa.public, JwtAlgorithm::Rs256).key_id("a");
        assert!(check(&two.build().expect("build"), &iss(json!("https://second.example"))).await.is_ok());
        // No issuer configured: iss is not checked.
        let any = JwtConfig::new().audience(AUDIENCE).key_pem(&k.rsa.public, JwtAlgorithm::Rs256).key_id("a");
        assert!(check(&any.build().expect("build"), &iss(json!("https://anyone.example"))).await.is_ok());
    }

    #[tokio::test]
    async fn unknown_kids_and_signatures_by_another_key_are_refused() {
        let k = keys();
        let auth = config()
            .key_pem(&k.rsa.public, JwtAlgorithm::Rs256)
            .key_id("a")
            .key_pem(&k.p256.public, JwtAlgorithm::Es256)
            .key_id("b")
            .build()
            .expect("build");
        assert_eq!(check(&auth, &k.rsa.token(Some("nope"), &claims())).await.err(), Some(Refusal::UnknownKey));
        assert_eq!(check(&auth, &k.rsa.token(None, &claims())).await.err(), Some(Refusal::UnknownKey));
        // kid of key a, signed by another RSA key
        assert_eq!(check(&auth, &k.rsa_other.token(Some("a"), &claims())).await.err(), Some(Refusal::BadSignature));
        // kid of key a (RS256), signed by key b as ES256
        assert_eq!(
            check(&auth, &k.p256.token(Some("a"), &claims())).await.err(),
            Some(Refusal::AlgorithmNotAllowed(JwtAlgorithm::Es256))
        );
        // kid of key b, an RS256 signature by key a
        assert_eq!(
            check(&auth, &k.rsa.token(Some("b"), &claims())).await.err(),
            Some(Refusal::AlgorithmNotAllowed(JwtAlgorithm::Rs256))
        );
        // the same key, another algorithm of its family
        let rs384 = k.rsa.sign(JwtAlgorithm::Rs384, header(JwtAlgorithm::Rs384, Some("a")), &claims());
        assert_eq!(check(&auth, &rs384).await.err(), Some(Refusal::AlgorithmNotAllowed(JwtAlgorithm::Rs384)));
        let ps256 = k.rsa.sign(JwtAlgorithm::Ps256, header(JwtAlgorithm::Ps256, Some("a")), &claims());
        assert_eq!(check(&auth, &ps256).await.err(), Some(Refusal::AlgorithmNotAllowed(JwtAlgorithm::Ps256)));
        let es512 = format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode(r#"{"alg":"ES512","kid":"b"}"#));
        assert_eq!(check(&auth, &es512).await.err(), Some(Refusal::UnsupportedAlgorithm(Some("ES512"))));
        let odd = format!("{}.e30.AAAA", URL_SAFE_NO_PAD.encode(r#"{"alg":"<script>","kid":"b"}"#));
        assert_eq!(check(&auth, &odd).await.err(), Some(Refusal::UnsupportedAlgorithm(None)));
    }

    #[tokio::test]
    async fn oversize_empty_and_garbage_tokens_are_refused() {
        let k = keys();
        let auth = config().key_pem(&k.rsa.public, JwtAlgorithm::Rs256).max_token_bytes(600).build().expect("build");
        let valid = k.rsa.token(None, &claims());
        assert!(valid.len() < 600 && check(&auth, &valid).await.is_ok());
        assert_eq!(check(&auth, "").await.err(), Some(Refusal::Missing));
        let big = k.rsa.token(None, &claims_with(json!({"pad": "x".repeat(600)})));
        assert_eq!(check(&auth, &big).await.err(), Some(Refusal::TooLarge(600)));
        let default = rsa_auth();
        assert_eq!(check(&default, &"a".repeat(8 * 1024 + 1)).await.err(), Some(Refusal::TooLarge(8192)));
        let b64 = |text: &str| URL_SAFE_NO_PAD.encode(text);
        let signature = valid.rsplit('.').next().expect("signature");
        let garbage = [
            "garbage".to_owned(),
            "eyJ.eyJ.".to_owned(),
            "eyJ.eyJ.eyJ".to_owned(),
            "a.b.c".to_owned(),
            "..".to_owned(),
            "...".to_owned(),
            ".e30.".to_owned(),
            format!("{}.e30.{signature}.", b64(r#"{"alg":"RS256"}"#)),
            format!("{}.e30", b64(r#"{"alg":"RS256"}"#)),
            format!("{}.e30.", b64(r#"{"alg":"RS256"}"#)),
            format!("{}.e30.{signature}", b64(r#"["alg","RS256"]"#)),
            format!("{}.e30.{signature}", b64(r#"{"alg":256}"#)),
            format!("{}.e30.{signature}", b64(r#"{"typ":"JWT"}"#)),
            format!("{}.e30.{signature}", b64(r#"{"alg":"RS256","kid":7}"#)),
            format!("{}.e30.{signature}", b64("not json")),
            format!("{} .e30.{signature}", b64(r#"{"alg":"RS256"}"#)),
            format!("{}.e30=.{signature}", b64(r#"{"alg":"RS256"}"#)),
            format!("{}.e30.{signature}=", b64(r#"{"alg":"RS256"}"#)),
            format!("{}.e30.{signature}", URL_SAFE_NO_PAD.encode([0xff, 0xfe, 0x00])),
            format!("{}.{}.{signature}", b64(r#"{"alg":"RS256"}"#), b64("[]")),
            "Bearer eyJhbGciOiJSUzI1NiJ9.e30.AAAA".to_owned(),
            "\u{0}\u{1}.\u{2}.\u{3}".to_owned(),
            "é.é.é".to_owned(),
        ];
        for token in &garbage {
            let refusal = check(&auth, token).await.expect_err(token);
            let message = refusal.to_string();
            assert!(message.len() < 100 && (token.len() < 8 || !message.contains(token.as_str())), "{message}");
        }
        assert!(matches!(check(&auth, "eyJ.eyJ.").await, Err(Refusal::Malformed(_))));
        // Claims that are not a JSON object, under a valid signature.
        for payload in [json!([1]), json!("sub"), json!(null)] {
            let token =
                sign_token(&header(JwtAlgorithm::Rs256, None), &payload, &k.rsa.encoding(), JwtAlgorithm::Rs256);
            assert!(matches!(check(&auth, &token).await, Err(Refusal::Malformed(_))), "{payload}");
        }
    }

    #[tokio::test]
    async fn critical_and_unencoded_payload_headers_are_refused() {
        let k = keys();
        let auth = rsa_auth();
        for extra in [json!({"crit": ["exp"], "exp": 1}), json!({"crit": []}), json!({"crit": ["b64"], "b64": false})] {
            let mut head = header(JwtAlgorithm::Rs256, Some("a"));
            for (name, value) in extra.as_object().expect("object") {
                head[name] = value.clone();
            }
            assert_eq!(
                check(&auth, &k.rsa.sign(JwtAlgorithm::Rs256, head, &claims())).await.err(),
                Some(Refusal::CriticalHeader)
            );
        }
        let mut head = header(JwtAlgorithm::Rs256, Some("a"));
        head["b64"] = false.into();
        assert!(matches!(
            check(&auth, &k.rsa.sign(JwtAlgorithm::Rs256, head, &claims())).await,
            Err(Refusal::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn key_urls_and_keys_in_the_header_are_never_used() {
        let k = keys();
        let trap = TestServer::start(jwks(&[k.rsa_other.jwk("attacker")])).await;
        let legit = TestServer::start(jwks(&[k.p256.jwk("jwks-key")])).await;
        let auth = config()
            .key_pem(&k.rsa.public, JwtAlgorithm::Rs256)
            .key_id("a")
            .allow_http_jwks()
            .jwks_url(&legit.url)
            .build()
            .expect("build");
        let x5c = STANDARD.encode(b"not really a certificate");
        for kid in ["attacker", "a"] {
            let mut head = header(JwtAlgorithm::Rs256, Some(kid));
            head["jku"] = format!("{}/jku", trap.url).into();
            head["x5u"] = format!("{}/x5u", trap.url).into();
            head["jwk"] = k.rsa_other.jwk(kid);
            head["x5c"] = json!([x5c]);
            let token = k.rsa_other.sign(JwtAlgorithm::Rs256, head, &claims());
            let expected = if kid == "a" { Refusal::BadSignature } else { Refusal::UnknownKey };
            assert_eq!(check(&auth, &token).await.err(), Some(expected));
        }
        assert_eq!(trap.connections(), 0, "nothing a token says is ever fetched");
        assert_eq!(legit.requests(), 1, "the unknown kid refetched only the configured JWKS");
    }

    #[tokio::test]
    async fn mangled_tokens_never_panic_and_are_never_accepted() {
        let k = keys();
        let auth = config()
            .key_pem(&k.rsa.public, JwtAlgorithm::Rs256)
            .key_pem(&k.p256.public, JwtAlgorithm::Es256)
            .key_id("es")
            .key_pem(&k.ed25519.public, JwtAlgorithm::EdDsa)
            .key_id("ed")
            .hmac_secret(Secret::new(HMAC_SECRET), JwtAlgorithm::Hs256)
            .key_id("hs")
            .build()
            .expect("build");
        let originals = [
            k.rsa.token(None, &claims()),
            k.p256.token(Some("es"), &claims()),
            k.ed25519.token(Some("ed"), &claims()),
            hmac_token(HMAC_SECRET.as_bytes(), &header(JwtAlgorithm::Hs256, Some("hs")), &claims()),
        ];
        let mut seed = 0x9e37_79b9_7f4a_7c15_u64;
        let mut random = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound.max(1) as u64) as usize
        };
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \"{}";
        let mut accepted = 0;
        for round in 0..600 {
            let original = &originals[round % originals.len()];
            let mut token = original.as_bytes().to_vec();
            for _ in 0..=random(3) {
                let at = random(token.len());
                match random(4) {
                    0 => token[at] = ALPHABET[random(ALPHABET.len())],
                    1 => drop(token.remove(at)),
                    2 => token.insert(at, ALPHABET[random(ALPHABET.len())]),
                    _ => token.truncate(at),
                }
            }
            let token = String::from_utf8(token).expect("ascii");
            if check(&auth, &token).await.is_ok() {
                assert_eq!(&token, original, "a changed token was accepted");
                accepted += 1;
            }
        }
        assert!(accepted < 20, "{accepted} unchanged tokens");
    }

    // --- configuration -----------------------------------------------------------------------

    #[test]
    fn build_checks_the_configuration() {
        let k = keys();
        let rsa = || config().key_pem(&k.rsa.public, JwtAlgorithm::Rs256);
        assert!(config_error(config()).contains("no signing keys"));
        assert!(config_error(JwtConfig::new().key_pem(&k.rsa.public, JwtAlgorithm::Rs256)).contains("no audience"));
        assert!(JwtConfig::new().skip_audience_check().key_pem(&k.rsa.public, JwtAlgorithm::Rs256).build().is_ok());
        assert!(config_error(rsa().skip_audience_check()).contains("both"));
        assert!(
            config_error(config().key_pem(&k.rsa.public, JwtAlgorithm::Es256)).contains("RSA keys cannot verify ES256")
        );
        assert!(
            config_error(config().key_pem(&k.p256.public, JwtAlgorithm::Es384))
                .contains("P-256 keys cannot verify ES384")
        );
        assert!(
            config_error(config().key_pem(&k.p384.public, JwtAlgorithm::Rs256))
                .contains("P-384 keys cannot verify RS256")
        );
        assert!(config_error(config().key_pem(&k.ed25519.public, JwtAlgorithm::Es256)).contains("Ed25519 keys cannot"));
        assert!(config_error(config().key_pem(&k.rsa.public, JwtAlgorithm::Hs256)).contains("hmac_secret"));
        assert!(config_error(config().key_pem(&k.rsa.private, JwtAlgorithm::Rs256)).contains("private key"));
        assert!(config_error(config().key_pem(b"hello", JwtAlgorithm::Rs256)).contains("no PEM block"));
        let short = config().hmac_secret(Secret::new("too short"), JwtAlgorithm::Hs256);
        assert!(config_error(short).contains("at least 32 bytes"));
        let hs512 = config().hmac_secret(Secret::new(HMAC_SECRET), JwtAlgorithm::Hs512);
        assert!(config_error(hs512).contains("at least 64 bytes"));
        assert!(config_error(config().hmac_secret(Secret::new(HMAC_SECRET), JwtAlgorithm::Rs256)).contains("HS256"));
        assert!(config_error(config().key_id("k").key_pem(&k.rsa.public, JwtAlgorithm::Rs256)).contains("key_id"));
        assert!(config_error(rsa().key_id("a").key_id("b")).contains("key_id"));
        let jwk = json!({ "keys": [k.p256.jwk("j")] }).to_string();
        assert!(config_error(config().key_jwk(&jwk).key_id("x")).contains("key_id"));
        let twice = rsa().key_id("a").key_pem(&k.p256.public, JwtAlgorithm::Es256).key_id("a");
        assert!(config_error(twice).contains("two keys"));
        assert!(
            config_error(rsa().key_id("j").key_jwk(&jwk).key_pem(&k.p384.public, JwtAlgorithm::Es384).key_id("j"))
                .contains("two keys")
        );
        assert!(config_error(rsa().jwks_url("http://127.0.0.1:1/jwks")).contains("https://"));
        assert!(rsa().jwks_url("http://127.0.0.1:1/jwks").allow_http_jwks().build().is_ok());
        assert!(rsa().jwks_url("https://login.example.com/jwks").build().is_ok());
        assert!(config_error(rsa().jwks_url("ftp://login.example.com/jwks").allow_http_jwks()).contains("https://"));
        assert!(config_error(rsa().jwks_url("not a url")).contains("JWKS URL"));
        assert!(config_error(rsa().algorithms([])).contains("no algorithm"));
        assert!(config_error(rsa().algorithms([JwtAlgorithm::Es256])).contains("not in algorithms()"));
        assert!(config_error(rsa().subject_claim("")).contains("subject_claim"));
        assert!(config_error(rsa().max_token_bytes(0)).contains("max_token_bytes"));
        assert!(config_error(rsa().jwks_timeout(Duration::ZERO)).contains("jwks_timeout"));

        let dir = std::env::temp_dir().join(format!("ks-jwt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (pem_file, jwk_file, secret_file) = (dir.join("key.pem"), dir.join("keys.json"), dir.join("secret"));
        std::fs::write(&pem_file, &k.ed25519.public).expect("write");
        std::fs::write(&jwk_file, &jwk).expect("write");
        std::fs::write(&secret_file, format!("{HMAC_SECRET}\n")).expect("write");
        let from_files = config()
            .key_pem_file(&pem_file, JwtAlgorithm::EdDsa)
            .key_jwk_file(&jwk_file)
            .hmac_secret(Secret::from_file(&secret_file), JwtAlgorithm::Hs256)
            .key_id("hs")
            .build()
            .expect("build");
        assert_eq!(from_files.inner.static_keys.len(), 3);
        assert!(
            config_error(config().key_pem_file(dir.join("missing.pem"), JwtAlgorithm::Rs256)).contains("missing.pem")
        );
        assert!(config_error(config().key_jwk_file(dir.join("missing.json"))).contains("missing.json"));
        let missing_secret = config().hmac_secret(Secret::from_file(dir.join("nope")), JwtAlgorithm::Hs256);
        assert!(config_error(missing_secret).contains("nope"));
        let _ = std::fs::remove_dir_all(&dir);

        assert_eq!("ES256".parse::<JwtAlgorithm>().ok(), Some(JwtAlgorithm::Es256));
        assert_eq!(JwtAlgorithm::EdDsa.to_string(), "EdDSA");
        assert!("es256".parse::<JwtAlgorithm>().is_err() && "none".parse::<JwtAlgorithm>().is_err());
    }

    #[test]
    fn debug_output_hides_secrets() {
        let config = config()
            .key_pem(&keys().rsa.public, JwtAlgorithm::Rs256)
            .hmac_secret(Secret::new(HMAC_SECRET), JwtAlgorithm::Hs256)
            .key_id("hs");
        let debug = format!("{config:?}");
        assert!(!debug.contains(HMAC_SECRET) && debug.contains("redacted"), "{debug}");
        let auth = config.build().expect("build");
        let debug = format!("{auth:?}");
        assert!(!debug.contains(HMAC_SECRET) && debug.contains("hs") && debug.contains(ISSUER), "{debug}");
    }

    #[test]
    fn jwk_keys_are_bound_to_their_algorithm() {
        let k = keys();
        let origin: Arc<str> = Arc::from("test");
        let load = |doc: &Value| parse_jwk_document(doc.to_string().as_bytes(), &origin, None);
        let one = |jwk: Value| -> Result<Vec<JwtAlgorithm>, String> {
            let load = load(&json!({ "keys": [jwk] }))?;
            match load.keys.first() {
                Some(key) => Ok(key.algorithms.clone()),
                None => Err(load.skipped.join("; ")),
            }
        };
        let without = |mut jwk: Value, member: &str| {
            jwk.as_object_mut().expect("object").remove(member);
            jwk
        };
        let with = |mut jwk: Value, member: &str, value: Value| {
            jwk[member] = value;
            jwk
        };
        let rsa = k.rsa.jwk("r");
        assert_eq!(one(without(rsa.clone(), "alg")), Ok(vec![JwtAlgorithm::Rs256]), "RSA without alg: RS256 only");
        assert_eq!(one(with(rsa.clone(), "alg", json!("PS256"))), Ok(vec![JwtAlgorithm::Ps256]));
        assert_eq!(one(with(rsa.clone(), "alg", json!("RS512"))), Ok(vec![JwtAlgorithm::Rs512]));
        assert_eq!(one(without(k.p256.jwk("e"), "alg")), Ok(vec![JwtAlgorithm::Es256]));
        assert_eq!(one(without(k.p384.jwk("e"), "alg")), Ok(vec![JwtAlgorithm::Es384]));
        assert_eq!(one(without(k.ed25519.jwk("e"), "alg")), Ok(vec![JwtAlgorithm::EdDsa]));
        assert_eq!(one(without(rsa.clone(), "use")), Ok(vec![JwtAlgorithm::Rs256]));
        assert_eq!(one(with(rsa.clone(), "key_ops", json!(["verify"]))), Ok(vec![JwtAlgorithm::Rs256]));
        let skipped = |jwk: Value, why: &str| {
            let error = one(jwk).expect_err("skipped");
            assert!(error.contains(why), "{error}");
        };
        skipped(with(rsa.clone(), "use", json!("enc")), "use");
        skipped(with(rsa.clone(), "key_ops", json!(["sign"])), "key_ops");
        skipped(with(rsa.clone(), "key_ops", json!(["sign, verify"])), "key_ops");
        skipped(with(rsa.clone(), "alg", json!("ES256")), "cannot verify ES256");
        skipped(with(rsa.clone(), "alg", json!("HS256")), "cannot verify HS256");
        skipped(with(rsa.clone(), "alg", json!("none")), "unsupported alg");
        skipped(with(rsa.clone(), "alg", json!("RSA-OAEP")), "unsupported alg");
        skipped(with(without(k.p256.jwk("e"), "alg"), "crv", json!("P-384")), "coordinates");
        skipped(with(k.p256.jwk("e"), "crv", json!("P-384")), "P-384 keys cannot verify ES256");
        skipped(with(k.p256.jwk("e"), "crv", json!("P-521")), "unsupported curve");
        skipped(with(k.p256.jwk("e"), "crv", json!("secp256k1")), "unsupported curve");
        skipped(with(k.ed25519.jwk("e"), "crv", json!("Ed448")), "unsupported curve");
        skipped(with(without(k.p256.jwk("e"), "alg"), "kty", json!("RSA")), "no n");
        skipped(with(k.p256.jwk("e"), "kty", json!("RSA")), "RSA keys cannot verify ES256");
        skipped(with(rsa.clone(), "n", json!("AQAB")), "too short");
        skipped(with(rsa.clone(), "e", json!("AQ")), "exponent");
        skipped(with(rsa.clone(), "e", json!("Ag")), "exponent");
        skipped(with(rsa.clone(), "n", json!("not base64!")), "base64url");
        skipped(with(rsa.clone(), "kid", json!(7)), "kid");
        let mut p256 = k.p256.jwk("e");
        let y = URL_SAFE_NO_PAD.decode(p256["y"].as_str().expect("y")).expect("y");
        let mut off_curve = y.clone();
        off_curve[31] ^= 1;
        p256["y"] = URL_SAFE_NO_PAD.encode(off_curve).into();
        skipped(p256, "not a valid EC P-256 public key");

        let refused = |doc: Value, why: &str| {
            let error = load(&doc).err().unwrap_or_default();
            assert!(error.contains(why), "{error:?}");
        };
        let oct = json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(HMAC_SECRET), "alg": "HS256", "kid": "h"});
        refused(json!({ "keys": [rsa.clone(), oct.clone()] }), "oct");
        refused(oct, "oct");
        refused(json!({ "keys": [with(rsa.clone(), "d", json!("AQAB"))] }), "private");
        refused(json!({ "keys": [rsa.clone(), with(k.p256.jwk("r"), "alg", json!("ES256"))] }), "two keys");
        refused(json!({ "keys": vec![k.p256.jwk("x"); MAX_JWKS_KEYS + 1] }), "more than 100");
        refused(json!({ "keys": 5 }), "not an array");
        refused(json!([rsa.clone()]), "not a JSON object");
        refused(json!({ "keys": [rsa.clone(), "x"] }), "not a JSON object");
        refused(json!({"hello": 1}), "neither");
        assert!(parse_jwk_document(b"{", &origin, None).is_err());
        assert!(parse_jwk_document(&vec![b' '; MAX_JWKS_BYTES + 1], &origin, None).is_err());
        // Skipped keys do not count as duplicates; a single JWK works as a document.
        let load = load(&json!({ "keys": [rsa.clone(), with(rsa.clone(), "use", json!("enc"))] })).expect("load");
        assert_eq!((load.keys.len(), load.skipped.len()), (1, 1));
        assert_eq!(parse_jwk_document(rsa.to_string().as_bytes(), &origin, None).map(|l| l.keys.len()), Ok(1));
        // The global allowlist skips keys outside it.
        let both = json!({ "keys": [rsa, k.p256.jwk("e")] }).to_string();
        let allowed = parse_jwk_document(both.as_bytes(), &origin, Some(&[JwtAlgorithm::Es256])).expect("load");
        assert_eq!((allowed.keys.len(), allowed.skipped.len()), (1, 1));
        assert_eq!(allowed.keys[0].kid.as_deref(), Some("e"));
    }

    #[tokio::test]
    async fn jwk_and_pem_keys_accept_only_their_algorithm() {
        let k = keys();
        let mut rsa = k.rsa.jwk("r");
        rsa["alg"] = "PS256".into();
        let auth = config().key_jwk(json!({ "keys": [rsa] }).to_string()).build().expect("build");
        let ps256 = k.rsa.sign(JwtAlgorithm::Ps256, header(JwtAlgorithm::Ps256, Some("r")), &claims());
        assert!(check(&auth, &ps256).await.is_ok());
        for alg in [JwtAlgorithm::Rs256, JwtAlgorithm::Ps384, JwtAlgorithm::Ps512] {
            let token = k.rsa.sign(alg, header(alg, Some("r")), &claims());
            assert_eq!(check(&auth, &token).await.err(), Some(Refusal::AlgorithmNotAllowed(alg)));
        }
        let auth = config().key_pem(&k.rsa.public, JwtAlgorithm::Ps512).build().expect("build");
        let rs512 = k.rsa.sign(JwtAlgorithm::Rs512, header(JwtAlgorithm::Rs512, None), &claims());
        assert_eq!(check(&auth, &rs512).await.err(), Some(Refusal::AlgorithmNotAllowed(JwtAlgorithm::Rs512)));
        // The global allowlist narrows what a key takes.
        let auth = config().key_jwk(k.ed25519.jwk("ed").to_string()).algorithms([JwtAlgorithm::EdDsa]).build();
        assert!(check(&auth.expect("build"), &k.ed25519.token(Some("ed"), &claims())).await.is_ok());
    }

    #[test]
    fn weak_rsa_keys_are_refused() {
        let origin: Arc<str> = Arc::from("test");
        let algorithms = || vec![JwtAlgorithm::Rs256];
        let e = [1, 0, 1];
        let small = openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:1024"], None);
        let small = openssl(&["pkey", "-pubout"], Some(&small));
        let error = Key::from_pem(&small, JwtAlgorithm::Rs256, None, origin.clone()).expect_err("1024 bits");
        assert!(error.contains("1024 bits is too short"), "{error}");
        let (label, der) = pem_block(std::str::from_utf8(&keys().rsa.public).expect("pem")).expect("pem");
        assert_eq!(label, "PUBLIC KEY");
        let (_, pkcs1) = spki(&der).expect("spki");
        let (n, _) = der_rsa_public_key(pkcs1).expect("pkcs1");
        assert!(Key::rsa(n, &e, algorithms(), None, origin.clone()).is_ok());
        assert!(Key::rsa(n, &[1], algorithms(), None, origin.clone()).is_err(), "e = 1");
        assert!(Key::rsa(n, &[4], algorithms(), None, origin.clone()).is_err(), "e even");
        assert!(Key::rsa(n, &[1, 0, 0, 0, 0, 1], algorithms(), None, origin.clone()).is_err(), "e >= 2^33");
        let mut even = n.to_vec();
        *even.last_mut().expect("n") &= 0xfe;
        assert!(Key::rsa(&even, &e, algorithms(), None, origin.clone()).is_err(), "n even");
        // A public modulus from an Infineon (ROCA) key: Wycheproof's jws_rsa_roca_key.
        let roca = URL_SAFE_NO_PAD
            .decode(concat!(
                "AanFpofbj7KjD4Lf-N2hVMKR7yewSyXhhbirIMTGpfYEhZ_lnt5UoK98DnKIgArXGTu3MaW_HhFw16HGaTDUHqPrId7fe4r11Cq",
                "Rw09yBFuW79V8sYIwHdzCaWflUI6auImYbVfoN9_nD5n8N8SY9DwXw7mwZM9wREPXoDPgOoIWl6q_MPsp7n0zs3Z5ZaiQWOOzl",
                "1S9OhwAfSiiOwz6efnXEaxuTEtPd7BjSx7NaFka8Dx9U7YqXy2RFj1O9PjyaDGuRh7YXsX3iMUSP_wSyHQg_c_qHRtKUsNSGCT7",
                "OZg0hzm2KphtjnayKJvC64vAbROBR4Ubg6Bxg9IQVZ-QYyE"
            ))
            .expect("base64");
        let error = Key::rsa(&roca, &e, algorithms(), None, origin.clone()).expect_err("ROCA");
        assert!(error.contains("ROCA"), "{error}");
        assert!(
            !has_roca_fingerprint(n)
                && !has_roca_fingerprint(&{
                    let (_, der) = pem_block(std::str::from_utf8(&keys().rsa_other.public).expect("pem")).expect("pem");
                    der
                })
        );
    }

    // --- JWKS --------------------------------------------------------------------------------

    fn jwks(keys: &[Value]) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    fn jwks_config(server: &TestServer) -> JwtConfig {
        config().allow_http_jwks().jwks_url(format!("{}/jwks.json", server.url))
    }

    #[tokio::test]
    async fn jwks_key_rotation_is_picked_up_with_one_refetch() {
        let k = keys();
        let server = TestServer::start(jwks(&[k.rsa.jwk("k1")])).await;
        let auth = jwks_config(&server).jwks_min_refetch(Duration::ZERO).build().expect("build");
        assert_eq!(server.requests(), 0, "build does not fetch");
        assert!(check(&auth, &k.rsa.token(Some("k1"), &claims())).await.is_ok());
        assert!(check(&auth, &k.rsa.token(Some("k1"), &claims())).await.is_ok());
        assert_eq!(server.requests(), 1, "the key set is cached");
        server.set_body(jwks(&[k.rsa.jwk("k1"), k.p256.jwk("k2")]));
        assert!(check(&auth, &k.p256.token(Some("k2"), &claims())).await.is_ok());
        assert_eq!(server.requests(), 2, "the new kid cost one refetch");
        assert!(check(&auth, &k.p256.token(Some("k2"), &claims())).await.is_ok());
        assert!(check(&auth, &k.rsa.token(Some("k1"), &claims())).await.is_ok());
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jwks_unknown_kid_bursts_cost_at_most_one_refetch() {
        let k = keys();
        let server = TestServer::start(jwks(&[k.p256.jwk("k1")])).await;
        let auth = jwks_config(&server).build().expect("build");
        let mut tasks = Vec::new();
        for i in 0..100u64 {
            let auth = auth.clone();
            let token = k.p256.token(Some(&format!("random-{:x}", i.wrapping_mul(0x9e37_79b9_7f4a_7c15))), &claims());
            tasks.push(tokio::spawn(async move { check(&auth, &token).await }));
        }
        for task in tasks {
            assert_eq!(task.await.expect("task").err(), Some(Refusal::UnknownKey));
        }
        assert!((1..=2).contains(&server.requests()), "{} fetches", server.requests());
        assert!(check(&auth, &k.p256.token(Some("k1"), &claims())).await.is_ok());
        for i in 0..20 {
            let token = k.p256.token(Some(&format!("later-{i}")), &claims());
            assert_eq!(check(&auth, &token).await.err(), Some(Refusal::UnknownKey));
        }
        assert!(server.requests() <= 2, "{} fetches", server.requests());
    }

    #[tokio::test]
    async fn jwks_down_fails_closed() {
        let k = keys();
        // A port nothing listens on.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/jwks.json", listener.local_addr().expect("addr"));
        drop(listener);
        let auth = config()
            .key_pem(&k.rsa.public, JwtAlgorithm::Rs256)
            .key_id("static")
            .allow_http_jwks()
            .jwks_url(&url)
            .build()
            .expect("build");
        let token = k.p256.token(Some("k1"), &claims());
        assert_eq!(check(&auth, &token).await.err(), Some(Refusal::KeysUnavailable));
        let status = auth.authenticate(&token, &Handshake::in_process()).await.expect_err("refused");
        assert_eq!(status.message(), "signing keys unavailable");
        assert!(check(&auth, &k.rsa.token(Some("static"), &claims())).await.is_ok(), "configured keys still work");

        // A JWKS answering errors is not hammered: one attempt per jwks_min_refetch.
        let server = TestServer::start(Vec::new()).await;
        server.set_status(500);
        let auth = jwks_config(&server).build().expect("build");
        for _ in 0..20 {
            assert_eq!(check(&auth, &token).await.err(), Some(Refusal::KeysUnavailable));
        }
        assert_eq!(server.requests(), 1);

        // A JWKS that went down after a good fetch: the cached keys keep working.
        let server = TestServer::start(jwks(&[k.p256.jwk("k1")])).await;
        let auth = jwks_config(&server).jwks_min_refetch(Duration::ZERO).build().expect("build");
        assert!(check(&auth, &token).await.is_ok());
        server.set_status(503);
        assert_eq!(check(&auth, &k.p256.token(Some("k2"), &claims())).await.err(), Some(Refusal::UnknownKey));
        assert!(check(&auth, &token).await.is_ok());
        assert_eq!(server.requests(), 2);
    }

    #[tokio::test]
    async fn jwks_that_never_answers_is_refused_within_the_timeout() {
        let k = keys();
        let server = TestServer::start(jwks(&[k.p256.jwk("k1")])).await;
        server.hang();
        let timeout = Duration::from_millis(300);
        let auth = jwks_config(&server).jwks_timeout(timeout).build().expect("build");
        let started = Instant::now();
        let refused = check(&auth, &k.p256.token(Some("k1"), &claims())).await;
        let took = started.elapsed();
        assert_eq!(refused.err(), Some(Refusal::KeysUnavailable));
        assert!(
            took >= timeout - Duration::from_millis(50) && took < timeout + Duration::from_secs(2),
            "took {took:?}"
        );
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn a_jwks_fetch_outlives_a_caller_that_gives_up() {
        let k = keys();
        let server = TestServer::start(jwks(&[k.p256.jwk("k1")])).await;
        server.set_delay(Duration::from_millis(300));
        let auth = jwks_config(&server).build().expect("build");
        let token = k.p256.token(Some("k1"), &claims());
        // The gateway's auth_timeout (or the client) gives up before the JWKS answers...
        assert!(tokio::time::timeout(Duration::from_millis(50), check(&auth, &token)).await.is_err());
        // ... and the fetch goes on, so the next token finds the keys without a new one.
        let loaded = tokio::time::timeout(Duration::from_secs(5), async {
            while auth.inner.jwks[0].current(Duration::from_secs(60)).is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(loaded.await.is_ok(), "the abandoned fetch completed");
        assert!(check(&auth, &token).await.is_ok());
        assert_eq!(server.requests(), 1);
    }

    #[tokio::test]
    async fn jwks_larger_than_the_bounds_is_refused() {
        let k = keys();
        let mut big = json!({ "keys": [k.p256.jwk("k1")] });
        big["padding"] = "x".repeat(MAX_JWKS_BYTES).into();
        let big = big.to_string().into_bytes();
        let token = k.p256.token(Some("k1"), &claims());
        for chunked in [false, true] {
            let server = TestServer::start(big.clone()).await;
            server.set_chunked(chunked);
            let auth = jwks_config(&server).build().expect("build");
            assert_eq!(check(&auth, &token).await.err(), Some(Refusal::KeysUnavailable), "chunked: {chunked}");
        }
        let many: Vec<Value> = (0..=MAX_JWKS_KEYS).map(|i| k.p256.jwk(&format!("k{i}"))).collect();
        let server = TestServer::start(jwks(&many)).await;
        let auth = jwks_config(&server).build().expect("build");
        assert_eq!(check(&auth, &token).await.err(), Some(Refusal::KeysUnavailable));
        // Just under the bounds is fine.
        let server = TestServer::start(jwks(&many[..MAX_JWKS_KEYS])).await;
        server.set_chunked(true);
        let auth = jwks_config(&server).build().expect("build");
        assert!(check(&auth, &token).await.is_ok());
    }

    #[tokio::test]
    async fn jwks_refresh_runs_in_the_background_and_stops_with_the_authenticator() {
        let k = keys();
        let server = TestServer::start(jwks(&[k.p256.jwk("k1")])).await;
        let auth = jwks_config(&server)
            .jwks_refresh(Duration::from_millis(20))
            .jwks_min_refetch(Duration::ZERO)
            .build()
            .expect("build");
        assert!(check(&auth, &k.p256.token(Some("k1"), &claims())).await.is_ok());
        // The refresh picks up a new key without any token asking for it.
        server.set_body(jwks(&[k.p256.jwk("k1"), k.ed25519.jwk("k2")]));
        let picked_up = tokio::time::timeout(Duration::from_secs(5), async {
            while auth.inner.jwks[0].current(Duration::from_secs(60)).is_none_or(|set| set.len() != 2) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        assert!(picked_up.await.is_ok(), "the background refresh fetched the new set");
        let requests = server.requests();
        assert!(requests >= 2);
        let task = {
            let mut refresher = lock(&auth.inner.refresher);
            let running = refresher.as_mut().expect("a refresh task");
            std::mem::replace(&mut running.task, tokio::spawn(async {}))
        };
        drop(auth);
        let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
        assert!(ended.is_ok(), "the refresh task ends when the authenticator is dropped");
        let after = server.requests();
        assert!(after <= requests + 1);
    }

    // --- Wycheproof --------------------------------------------------------------------------

    fn wycheproof(file: &str) -> Option<Value> {
        let dir = std::env::var_os("WYCHEPROOF_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/vectors/wycheproof")));
        let path = dir.join(file);
        match std::fs::read(&path) {
            Ok(bytes) => Some(serde_json::from_slice(&bytes).expect("Wycheproof JSON")),
            Err(e) if std::env::var("KAFKASOCKS_REQUIRE_VECTORS").as_deref() == Ok("1") => {
                panic!("KAFKASOCKS_REQUIRE_VECTORS=1 but {} cannot be read: {e}", path.display())
            }
            Err(_) => {
                println!(
                    "skipping: {} not found. Point WYCHEPROOF_DIR at a folder with Wycheproof's \
                     testvectors_v1/{file} (C2SP/wycheproof) to run these vectors.",
                    path.display()
                );
                None
            }
        }
    }

    /// An authenticator trusting one Wycheproof key as a user would configure it: `oct`
    /// keys as HMAC secrets (the bytes of `k`, the JWK's `alg`), other keys as their
    /// public JWK.
    fn wycheproof_authenticator(keys: &[&Value]) -> Result<JwtAuthenticator, String> {
        let mut config = JwtConfig::new().skip_audience_check();
        if keys.iter().all(|key| key["kty"] == "oct") {
            for key in keys {
                let secret =
                    URL_SAFE_NO_PAD.decode(key["k"].as_str().unwrap_or_default()).map_err(|e| e.to_string())?;
                let name = key["alg"].as_str().unwrap_or_default();
                let alg = JwtAlgorithm::from_name(name).ok_or_else(|| format!("unsupported alg {name}"))?;
                let kid = key["kid"].as_str().map(str::to_owned);
                config = config.with_key(Key::hmac(&secret, alg, kid, Arc::from("Wycheproof"))?);
            }
        } else {
            let public: Vec<Value> = keys
                .iter()
                .map(|key| {
                    let mut key = (*key).clone();
                    for member in ["d", "p", "q", "dp", "dq", "qi", "oth"] {
                        key.as_object_mut().map(|m| m.remove(member));
                    }
                    key
                })
                .collect();
            config = config.key_jwk(json!({ "keys": public }).to_string());
        }
        config.build().map_err(|e| e.to_string())
    }

    fn header_alg(jws: &str) -> Option<String> {
        let header = URL_SAFE_NO_PAD.decode(jws.split('.').next()?).ok()?;
        let header: Value = serde_json::from_slice(&header).ok()?;
        header["alg"].as_str().map(str::to_owned)
    }

    fn tests_of(group: &Value) -> &Vec<Value> {
        group["tests"].as_array().expect("tests")
    }

    #[tokio::test]
    async fn wycheproof_json_web_signature_vectors() {
        let Some(file) = wycheproof("json_web_signature_test.json") else { return };
        // Valid vectors this verifier refuses on purpose, and why.
        let refused_by_policy: BTreeMap<u64, &str> = BTreeMap::from([
            (346, "the JWK says alg PS256: the key takes PS256 only, not the token's PS384"),
            (350, "the JWK says alg PS256: the key takes PS256 only, not the token's PS384"),
            (349, "key_ops is [\"sign, verify\"], one string that is not \"verify\": not a verification key"),
            (372, "a '?' inside the base64url header: strict base64url (RFC 7515 §2) refuses it"),
            (373, "a '?' inside the base64url payload: strict base64url refuses it"),
        ]);
        // Invalid vectors that are byte-identical to a valid one of the same group (the
        // source lost their padding): no verifier can refuse them and accept the other.
        let identical_to_valid: BTreeMap<u64, u64> = BTreeMap::from([(367, 357), (370, 357)]);
        let mut texts = BTreeMap::new();
        let (mut accepted, mut rejected, mut total) = (0, 0, 0);
        let mut skipped = BTreeMap::new();
        let mut policy = BTreeMap::new();
        let mut vector_errors = Vec::new();
        let mut failures = Vec::new();
        for group in file["testGroups"].as_array().expect("groups") {
            let key = &group["private"];
            let auth = wycheproof_authenticator(&[key]);
            let key_supported = key["alg"].as_str().is_none_or(|alg| JwtAlgorithm::from_name(alg).is_some());
            for test in tests_of(group) {
                total += 1;
                let id = test["tcId"].as_u64().expect("tcId");
                let jws = match &test["jws"] {
                    Value::String(jws) => jws.clone(),
                    other => other.to_string(),
                };
                texts.insert(id, jws.clone());
                let outcome = match &auth {
                    Ok(auth) => auth.inner.verify_token(&jws).await.map(|_| ()).map_err(|r| r.to_string()),
                    Err(e) => Err(format!("key refused: {e}")),
                };
                let alg = header_alg(&jws);
                let supported = key_supported && alg.as_deref().is_none_or(|a| JwtAlgorithm::from_name(a).is_some());
                let what = format!("tcId {id} ({}, {})", group["comment"], test["comment"]);
                match (test["result"].as_str(), outcome) {
                    (Some("valid"), Ok(())) => accepted += 1,
                    (Some("valid"), Err(why)) if !supported => {
                        skipped.insert(id, format!("{} is not supported ({why})", alg.unwrap_or_default()));
                    }
                    (Some("valid"), Err(why)) if refused_by_policy.contains_key(&id) => {
                        policy.insert(id, why);
                    }
                    (Some("valid"), Err(why)) => failures.push(format!("{what}: valid vector refused: {why}")),
                    (Some("invalid"), Err(_)) => rejected += 1,
                    (Some("invalid"), Ok(())) if identical_to_valid.contains_key(&id) => vector_errors.push(id),
                    (Some("invalid"), Ok(())) => failures.push(format!("{what}: invalid vector accepted")),
                    (result, outcome) => failures.push(format!("{what}: result {result:?}, outcome {outcome:?}")),
                }
            }
        }
        println!("Wycheproof JWS: {total} vectors: {accepted} valid accepted, {rejected} invalid rejected");
        for (id, why) in &skipped {
            println!("  skipped (unsupported algorithm): tcId {id}: {why}");
        }
        for (id, why) in &policy {
            println!("  valid but refused by policy: tcId {id}: {} [{why}]", refused_by_policy[id]);
        }
        for id in &vector_errors {
            println!("  invalid but byte-identical to valid tcId {}: tcId {id}, accepted", identical_to_valid[id]);
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(total, 401);
        assert_eq!(policy.keys().collect::<Vec<_>>(), refused_by_policy.keys().collect::<Vec<_>>());
        assert_eq!(skipped.keys().copied().collect::<Vec<_>>(), [347, 351], "only ES512 (P-521) may be skipped");
        assert!(skipped.values().all(|why| why.starts_with("ES512 ")), "{skipped:?}");
        assert_eq!(vector_errors, identical_to_valid.keys().copied().collect::<Vec<_>>());
        for (id, twin) in &identical_to_valid {
            assert_eq!(texts[id], texts[twin], "tcId {id} is the same JWS as tcId {twin}");
        }
        assert_eq!(accepted + rejected + skipped.len() + policy.len() + vector_errors.len(), total);
    }

    #[tokio::test]
    async fn wycheproof_json_web_key_vectors() {
        let Some(file) = wycheproof("json_web_key_test.json") else { return };
        let (mut accepted, mut rejected_keys, mut rejected_tokens, mut total) = (0, 0, 0, 0);
        let mut failures = Vec::new();
        for group in file["testGroups"].as_array().expect("groups") {
            let set = group.get("public").unwrap_or(&group["private"]);
            let keys: Vec<&Value> = set["keys"].as_array().expect("keys").iter().collect();
            let auth = wycheproof_authenticator(&keys);
            for test in tests_of(group) {
                total += 1;
                let id = test["tcId"].as_u64().expect("tcId");
                let what = format!("tcId {id} ({}, {})", group["comment"], test["comment"]);
                let jws = test["jws"].as_str().expect("jws");
                let valid = test["result"] == "valid";
                match &auth {
                    Err(why) if valid => failures.push(format!("{what}: the key set was refused: {why}")),
                    Err(_) => rejected_keys += 1,
                    Ok(auth) => match auth.inner.verify_token(jws).await {
                        Ok(_) if valid => accepted += 1,
                        Ok(_) => failures.push(format!("{what}: invalid vector accepted")),
                        Err(why) if valid => failures.push(format!("{what}: valid vector refused: {why}")),
                        // Vectors about the key must fail at the key, not by luck later.
                        Err(_) if test["comment"] == "rejectsModifiedSignature" => rejected_tokens += 1,
                        Err(why) => {
                            failures.push(format!("{what}: the bad key was accepted (the token failed: {why})"))
                        }
                    },
                }
            }
        }
        println!(
            "Wycheproof JWK: {total} vectors: {accepted} valid accepted, {rejected_keys} refused at the key, \
             {rejected_tokens} at the signature"
        );
        assert!(failures.is_empty(), "{}", failures.join("\n"));
        assert_eq!(total, 26);
    }

    // --- a JWKS server for tests -------------------------------------------------------------

    struct Behaviour {
        body: Vec<u8>,
        status: u16,
        hang: bool,
        chunked: bool,
        delay: Duration,
    }

    /// An HTTP server on 127.0.0.1 that serves one body for every path and counts
    /// connections and requests.
    struct TestServer {
        url: String,
        connections: Arc<AtomicUsize>,
        requests: Arc<AtomicUsize>,
        behaviour: Arc<Mutex<Behaviour>>,
        task: tokio::task::JoinHandle<()>,
    }

    impl TestServer {
        async fn start(body: Vec<u8>) -> TestServer {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let connections = Arc::new(AtomicUsize::new(0));
            let requests = Arc::new(AtomicUsize::new(0));
            let behaviour = Arc::new(Mutex::new(Behaviour {
                body,
                status: 200,
                hang: false,
                chunked: false,
                delay: Duration::ZERO,
            }));
            let (conns, reqs, shared) = (connections.clone(), requests.clone(), behaviour.clone());
            let task = tokio::spawn(async move {
                while let Ok((stream, _)) = listener.accept().await {
                    conns.fetch_add(1, Ordering::SeqCst);
                    let (requests, behaviour) = (reqs.clone(), shared.clone());
                    let service = hyper::service::service_fn(move |_request: hyper::Request<hyper::body::Incoming>| {
                        let (requests, behaviour) = (requests.clone(), behaviour.clone());
                        async move {
                            requests.fetch_add(1, Ordering::SeqCst);
                            let (body, status, hang, chunked, delay) = {
                                let b = lock(&behaviour);
                                (b.body.clone(), b.status, b.hang, b.chunked, b.delay)
                            };
                            if hang {
                                std::future::pending::<()>().await;
                            }
                            tokio::time::sleep(delay).await;
                            let body = if chunked {
                                let frames: Vec<Result<Frame<Bytes>, Infallible>> = body
                                    .chunks(16 * 1024)
                                    .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                                    .collect();
                                Either::Right(StreamBody::new(futures_util::stream::iter(frames)))
                            } else {
                                Either::Left(Full::new(Bytes::from(body)))
                            };
                            let mut response = hyper::Response::new(body);
                            *response.status_mut() = hyper::StatusCode::from_u16(status).expect("status");
                            Ok::<_, Infallible>(response)
                        }
                    });
                    tokio::spawn(async move {
                        let io = hyper_util::rt::TokioIo::new(stream);
                        let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                    });
                }
            });
            TestServer { url, connections, requests, behaviour, task }
        }

        fn set_body(&self, body: Vec<u8>) {
            lock(&self.behaviour).body = body;
        }

        fn set_status(&self, status: u16) {
            lock(&self.behaviour).status = status;
        }

        fn set_chunked(&self, chunked: bool) {
            lock(&self.behaviour).chunked = chunked;
        }

        fn set_delay(&self, delay: Duration) {
            lock(&self.behaviour).delay = delay;
        }

        fn hang(&self) {
            lock(&self.behaviour).hang = true;
        }

        fn connections(&self) -> usize {
            self.connections.load(Ordering::SeqCst)
        }

        fn requests(&self) -> usize {
            self.requests.load(Ordering::SeqCst)
        }
    }

    impl Drop for TestServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }
}
