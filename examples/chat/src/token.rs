//! The demo's stand-in for an identity provider: an Ed25519 key made at start, in memory,
//! and the tokens `POST /token` signs with it.
//!
//! **Anyone may ask for a token for any name.** This shows the flow (the page fetches a
//! JWT, the gateway checks it, the hooks trust only its subject); it authenticates nobody.
//! A real deployment gets its tokens from its identity provider (Auth0, Keycloak, Cognito,
//! …) and points `JwtConfig::jwks_url` at the provider's keys (docs/security.md).
//!
//! A token is an EdDSA JWT:
//!
//! ```text
//! { "iss": "kafkasocks-chat", "aud": "kafkasocks-chat", "sub": "<user name>",
//!   "iat": <now>, "exp": <now + CHAT_TOKEN_TTL>, "rooms": ["*"] }
//! ```
//!
//! `rooms` lists the rooms the holder may read and post to (the gateway's permissions pin
//! the chat's Kafka keys to it); `"*"` is every room. `CHAT_TOKEN_ROOMS=general,random`
//! restricts the tokens this endpoint signs; with a real provider, the same claim comes
//! from the user's profile (a Keycloak mapper, an Auth0 action).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{EncodePrivateKey, EncodePublicKey};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand::TryRngCore;

/// `iss` and `aud` of every token, checked by the gateway.
pub(crate) const ISSUER: &str = "kafkasocks-chat";
/// See [`ISSUER`].
pub(crate) const AUDIENCE: &str = "kafkasocks-chat";

/// How long a token lasts unless `CHAT_TOKEN_TTL` says otherwise. The page refreshes its
/// token before it expires (at 80 % of its lifetime), over the open connection.
const DEFAULT_TTL: Duration = Duration::from_secs(10 * 60);

/// Signs the demo's tokens.
pub(crate) struct TokenIssuer {
    key: EncodingKey,
    public_pem: String,
    ttl: Duration,
    rooms: Vec<String>,
}

impl std::fmt::Debug for TokenIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The private key stays out of logs.
        f.debug_struct("TokenIssuer").field("ttl", &self.ttl).field("rooms", &self.rooms).finish_non_exhaustive()
    }
}

/// A signed token and when it expires (Unix ms).
#[derive(Debug)]
pub(crate) struct Issued {
    pub(crate) token: String,
    pub(crate) expires_at_ms: u64,
}

impl TokenIssuer {
    /// A fresh key (from the operating system's random source) and the settings from
    /// `CHAT_TOKEN_TTL` and `CHAT_TOKEN_ROOMS`.
    pub(crate) fn from_env() -> anyhow::Result<TokenIssuer> {
        let ttl = match std::env::var("CHAT_TOKEN_TTL") {
            Ok(v) => parse_ttl(&v).with_context(|| format!("$CHAT_TOKEN_TTL={v:?}"))?,
            Err(_) => DEFAULT_TTL,
        };
        let rooms = std::env::var("CHAT_TOKEN_ROOMS").unwrap_or_else(|_| "*".to_owned());
        let rooms: Vec<String> = rooms.split(',').map(str::trim).filter(|r| !r.is_empty()).map(str::to_owned).collect();
        anyhow::ensure!(!rooms.is_empty(), "$CHAT_TOKEN_ROOMS lists no room");
        TokenIssuer::generate(ttl, rooms)
    }

    /// A fresh Ed25519 key, kept in memory only: tokens die with the process.
    pub(crate) fn generate(ttl: Duration, rooms: Vec<String>) -> anyhow::Result<TokenIssuer> {
        let mut seed = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut seed).context("the operating system's random source")?;
        let signing = SigningKey::from_bytes(&seed);
        let private = signing.to_pkcs8_der().context("encoding the signing key")?;
        let public_pem =
            signing.verifying_key().to_public_key_pem(LineEnding::LF).context("encoding the public key")?;
        Ok(TokenIssuer { key: EncodingKey::from_ed_der(private.as_bytes()), public_pem, ttl, rooms })
    }

    /// The public key (SPKI PEM), for the gateway's `JwtConfig::key_pem`.
    pub(crate) fn public_pem(&self) -> &str {
        &self.public_pem
    }

    /// How long the tokens last.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// The `rooms` claim of every token.
    pub(crate) fn rooms(&self) -> &[String] {
        &self.rooms
    }

    /// A token for `user` (a name [`valid_user`] accepted).
    pub(crate) fn issue(&self, user: &str) -> anyhow::Result<Issued> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH).context("the clock is before 1970")?.as_secs();
        let exp = now + self.ttl.as_secs();
        let claims = serde_json::json!({
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user,
            "iat": now,
            "exp": exp,
            "rooms": self.rooms,
        });
        let token = jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &claims, &self.key).context("signing")?;
        Ok(Issued { token, expires_at_ms: exp * 1000 })
    }
}

/// `CHAT_TOKEN_TTL`: seconds (`600`) or a number with `s`, `m` or `h` (`90s`, `10m`, `1h`);
/// from 5 s to 24 h.
fn parse_ttl(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        Some((i, _)) => text.split_at(i),
        None => (text, "s"),
    };
    let n: u64 = number.parse().context("expected a number of seconds, or 90s, 10m, 1h")?;
    let secs = match unit.trim() {
        "s" => n,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        other => anyhow::bail!("unknown unit {other:?} (s, m or h)"),
    };
    anyhow::ensure!((5..=24 * 3600).contains(&secs), "a token lifetime is 5 s to 24 h");
    Ok(Duration::from_secs(secs))
}

/// A user name as `POST /token` accepts it: trimmed, 1-32 characters, letters, digits,
/// spaces, `-` or `_`. It becomes the token's subject, and the author of every message
/// posted with the token.
pub(crate) fn valid_user(raw: &str) -> Result<&str, &'static str> {
    let name = raw.trim();
    let n = name.chars().count();
    if n == 0 || n > 32 {
        return Err("a name is 1-32 characters");
    }
    if !name.chars().all(|c| c.is_alphanumeric() || c == ' ' || c == '-' || c == '_') {
        return Err("a name is letters, digits, spaces, '-' or '_'");
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lifetimes() {
        assert_eq!(parse_ttl("600").ok(), Some(Duration::from_secs(600)));
        assert_eq!(parse_ttl("90s").ok(), Some(Duration::from_secs(90)));
        assert_eq!(parse_ttl(" 10m ").ok(), Some(Duration::from_secs(600)));
        assert_eq!(parse_ttl("1h").ok(), Some(Duration::from_secs(3600)));
        for bad in ["", "m", "10 d", "-5", "1", "25h", "99999999999999999999h"] {
            assert!(parse_ttl(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(valid_user("  Ada Lovelace "), Ok("Ada Lovelace"));
        assert_eq!(valid_user("bob_2-x"), Ok("bob_2-x"));
        assert_eq!(valid_user("Zoë"), Ok("Zoë"));
        assert_eq!(valid_user(&"é".repeat(32)).map(str::len), Ok(64));
        for bad in ["", "   ", "<script>", "a\nb", "a\u{0}b", "ada@example.com", &"x".repeat(33)] {
            assert!(valid_user(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tokens_carry_the_claims() -> anyhow::Result<()> {
        let issuer = TokenIssuer::generate(Duration::from_secs(60), vec!["general".into()])?;
        let issued = issuer.issue("ada")?;
        assert!(issuer.public_pem().starts_with("-----BEGIN PUBLIC KEY-----"));
        let key = jsonwebtoken::DecodingKey::from_ed_pem(issuer.public_pem().as_bytes())?;
        let mut validation = jsonwebtoken::Validation::new(Algorithm::EdDSA);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        let data = jsonwebtoken::decode::<serde_json::Value>(&issued.token, &key, &validation)?;
        assert_eq!(data.claims["sub"], "ada");
        assert_eq!(data.claims["rooms"], serde_json::json!(["general"]));
        assert_eq!(data.claims["exp"].as_u64().map(|e| e * 1000), Some(issued.expires_at_ms));
        Ok(())
    }
}
