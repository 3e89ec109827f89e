//! Bearer tokens come from anyone: `JwtAuthenticator` (one fixed ES256 test key, audience
//! "a", the defaults otherwise) must never panic or wait on any token, and must accept only
//! what its rules allow. The first byte says what the rest is:
//!
//! * 0 or 2 (mod 4): the token text, as a client would send it (refused, short of forging
//!   an ES256 signature);
//! * 1: `[n] header(n bytes) claims...`: a JOSE header and a claim set of the fuzzer's
//!   choosing, each base64url-encoded and signed with the test key (fuzz/keys/, used nowhere
//!   else), so the header and claim checks behind the signature are reached too;
//! * 3: `[pos_hi] [pos_lo] [byte]` then as 1: that signed token with the character at `pos`
//!   (modulo its length) replaced by `byte` (ASCII), to probe malleability.
//!
//! Whatever is accepted must have been signed with ES256 by the test key, hold the audience
//! "a", a current `exp` and a non-empty `sub` that the principal carries.
#![no_main]

use std::sync::OnceLock;
use std::task::{Context, Poll, Waker};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use kafkasocks::{Authenticator, Handshake, JwtAlgorithm, JwtAuthenticator, JwtConfig};
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey as _;
use serde_json::Value;

const PUBLIC_KEY: &str = include_str!("../keys/es256-test-public.pem");
const PRIVATE_KEY: &str = include_str!("../keys/es256-test-private.pem");
/// `JwtConfig`'s default leeway.
const LEEWAY_SECS: f64 = 30.0;

struct Fixture {
    auth: JwtAuthenticator,
    signer: SigningKey,
    handshake: Handshake,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture {
        auth: JwtConfig::new()
            .audience("a")
            .key_pem(PUBLIC_KEY.as_bytes(), JwtAlgorithm::Es256)
            .build()
            .expect("the test JwtConfig builds"),
        signer: SigningKey::from_pkcs8_pem(PRIVATE_KEY).expect("the test key parses"),
        handshake: Handshake::in_process(),
    })
}

/// `[n] header(n bytes) claims...`, signed with the test key.
fn signed(f: &Fixture, data: &[u8]) -> Option<String> {
    let (&n, rest) = data.split_first()?;
    let (header, claims) = rest.split_at_checked(usize::from(n))?;
    let input = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
    let signature: Signature = f.signer.sign(input.as_bytes());
    Some(format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes())))
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&kind, rest)) = data.split_first() else { return };
    let token = match kind % 4 {
        1 => {
            let Some(token) = signed(f, rest) else { return };
            token
        }
        3 => {
            let [hi, lo, byte, rest @ ..] = rest else { return };
            let Some(token) = signed(f, rest) else { return };
            if !byte.is_ascii() {
                return;
            }
            let mut bytes = token.into_bytes();
            let at = usize::from(u16::from_be_bytes([*hi, *lo])) % bytes.len();
            bytes[at] = *byte;
            String::from_utf8(bytes).expect("ASCII")
        }
        _ => String::from_utf8_lossy(rest).into_owned(),
    };

    // A static key needs no I/O: the verdict is ready on the first poll.
    let mut verdict = f.auth.authenticate(&token, &f.handshake);
    let Poll::Ready(verdict) = verdict.as_mut().poll(&mut Context::from_waker(Waker::noop())) else {
        panic!("verifying against a PEM key waited");
    };
    let Ok(principal) = verdict else { return };

    // Accepted: check the token against the rules ourselves.
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        panic!("accepted a token that is not three parts: {token:?}");
    };
    let json = |part: &str| -> Value {
        let bytes = URL_SAFE_NO_PAD
            .decode(part)
            .unwrap_or_else(|e| panic!("accepted a part that is not base64url ({e}): {part:?}"));
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("accepted a part that is not JSON ({e}): {part:?}"))
    };
    let (header, claims) = (json(header), json(claims));
    assert_eq!(header["alg"], "ES256", "accepted another algorithm: {header}");
    let audience_ok = match &claims["aud"] {
        Value::String(a) => a == "a",
        Value::Array(auds) => auds.iter().any(|a| a == "a"),
        _ => false,
    };
    assert!(audience_ok, "accepted without audience \"a\": {claims}");
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs_f64();
    let exp = claims["exp"].as_f64().unwrap_or_else(|| panic!("accepted without a numeric exp: {claims}"));
    assert!(now < exp + LEEWAY_SECS, "accepted an expired token: {claims}");
    let sub = claims["sub"].as_str().unwrap_or_default();
    assert!(!sub.is_empty(), "accepted without a subject: {claims}");
    assert_eq!(principal.subject(), sub);
});
