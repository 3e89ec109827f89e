//! [`KafkaConfig`]: where Kafka is and how the gateway connects to it: TLS (with client
//! certificates), SASL (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER with OIDC client credentials),
//! the partitioner, and raw librdkafka options. Secrets are [`Secret`]s: never shown in
//! `Debug` output, logs or metrics, and read from their files only when the gateway starts.
//!
//! ```
//! use kafkasocks::{KafkaConfig, KafkaTls, Sasl, Secret};
//!
//! let kafka = KafkaConfig::new("broker-1.example.com:9094")
//!     .tls(KafkaTls::new().ca_file("/etc/kafka/ca.pem"))
//!     .sasl(Sasl::scram_sha512("gateway", Secret::from_file("/run/secrets/kafka-password")));
//! assert_eq!(kafka.security_protocol(), "SASL_SSL");
//! assert!(!format!("{kafka:?}").contains("kafka-password\""));
//! ```

use std::fmt;
use std::path::PathBuf;

use rdkafka::ClientConfig;

use crate::error::Error;
use crate::secret::Secret;

/// TLS to the brokers (`security.protocol` SSL or SASL_SSL).
#[derive(Debug, Clone, Default)]
pub struct KafkaTls {
    ca_file: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
    key_password: Option<Secret>,
}

impl KafkaTls {
    /// TLS, verifying the brokers against the system's CA certificates.
    pub fn new() -> KafkaTls {
        KafkaTls::default()
    }

    /// Verifies the brokers against the CA certificates in this PEM file instead.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> KafkaTls {
        self.ca_file = Some(path.into());
        self
    }

    /// Presents this client certificate (PEM chain) and key (PEM) to the brokers (mTLS).
    pub fn client_certificate(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> KafkaTls {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// The password of an encrypted client key.
    pub fn client_key_password(mut self, password: Secret) -> KafkaTls {
        self.key_password = Some(password);
        self
    }
}

/// SASL authentication to the brokers (`security.protocol` SASL_SSL, or SASL_PLAINTEXT
/// without [`KafkaTls`]).
#[derive(Debug, Clone)]
pub struct Sasl(SaslKind);

#[derive(Debug, Clone)]
enum SaslKind {
    Password { mechanism: &'static str, username: String, password: Secret },
    Oidc { token_endpoint: String, client_id: String, client_secret: Secret, scope: Option<String> },
}

impl Sasl {
    /// SASL/PLAIN (Confluent Cloud API keys: the key is the username, the secret the password).
    pub fn plain(username: impl Into<String>, password: Secret) -> Sasl {
        Sasl(SaslKind::Password { mechanism: "PLAIN", username: username.into(), password })
    }

    /// SASL/SCRAM-SHA-256.
    pub fn scram_sha256(username: impl Into<String>, password: Secret) -> Sasl {
        Sasl(SaslKind::Password { mechanism: "SCRAM-SHA-256", username: username.into(), password })
    }

    /// SASL/SCRAM-SHA-512.
    pub fn scram_sha512(username: impl Into<String>, password: Secret) -> Sasl {
        Sasl(SaslKind::Password { mechanism: "SCRAM-SHA-512", username: username.into(), password })
    }

    /// SASL/OAUTHBEARER with tokens from an OIDC provider's token endpoint (the client
    /// credentials grant), refreshed by librdkafka before they expire.
    pub fn oauthbearer_oidc(
        token_endpoint: impl Into<String>,
        client_id: impl Into<String>,
        client_secret: Secret,
    ) -> Sasl {
        Sasl(SaslKind::Oidc {
            token_endpoint: token_endpoint.into(),
            client_id: client_id.into(),
            client_secret,
            scope: None,
        })
    }

    /// The scope to ask OAUTHBEARER tokens for (ignored by the other mechanisms).
    pub fn scope(mut self, scope: impl Into<String>) -> Sasl {
        if let SaslKind::Oidc { scope: s, .. } = &mut self.0 {
            *s = Some(scope.into());
        }
        self
    }

    /// The mechanism's name, as Kafka calls it.
    pub fn mechanism(&self) -> &'static str {
        match &self.0 {
            SaslKind::Password { mechanism, .. } => mechanism,
            SaslKind::Oidc { .. } => "OAUTHBEARER",
        }
    }
}

/// How keyed records are spread over partitions when they are published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Partitioner {
    /// The partition Kafka's Java producer (and Kafka Streams) picks for the same key:
    /// `murmur2(key) % partitions` (librdkafka's `murmur2_random`; records without a key go
    /// to a random partition). The default, so that a key keeps its order whether a Java
    /// service or a browser produces it.
    #[default]
    JavaCompatible,
    /// librdkafka's own default, `consistent_random` (CRC32 of the key): what other
    /// librdkafka-based producers (confluent-kafka-python, -go, -dotnet) pick by default.
    Librdkafka,
}

impl Partitioner {
    fn librdkafka_name(self) -> &'static str {
        match self {
            Partitioner::JavaCompatible => "murmur2_random",
            Partitioner::Librdkafka => "consistent_random",
        }
    }
}

/// Where Kafka is and how to talk to it.
#[derive(Clone)]
pub struct KafkaConfig {
    pub(crate) bootstrap: String,
    tls: Option<KafkaTls>,
    sasl: Option<Sasl>,
    partitioner: Partitioner,
    pub(crate) options: Vec<(String, String)>,
}

impl KafkaConfig {
    /// Kafka at these bootstrap servers (`host:port[,host:port]`), plaintext, unauthenticated.
    pub fn new(bootstrap: impl Into<String>) -> KafkaConfig {
        KafkaConfig {
            bootstrap: bootstrap.into(),
            tls: None,
            sasl: None,
            partitioner: Partitioner::default(),
            options: Vec::new(),
        }
    }

    /// Kafka as the environment describes it (all optional; docs/kafka.md has examples):
    ///
    /// | variable | meaning |
    /// |---|---|
    /// | `KAFKA_BOOTSTRAP` | bootstrap servers, default `127.0.0.1:19092` (what `scripts/services up` starts) |
    /// | `KAFKA_TLS` | `true`: TLS with the system's CA certificates (implied by the next three) |
    /// | `KAFKA_TLS_CA_FILE` | PEM CA certificates to verify the brokers with |
    /// | `KAFKA_TLS_CERT_FILE`, `KAFKA_TLS_KEY_FILE` | a client certificate and key (mTLS) |
    /// | `KAFKA_SASL_MECHANISM` | `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` |
    /// | `KAFKA_SASL_USERNAME` | the user (PLAIN, SCRAM) |
    /// | `KAFKA_SASL_PASSWORD_FILE` or `KAFKA_SASL_PASSWORD` | its password |
    /// | `KAFKA_OAUTH_TOKEN_ENDPOINT`, `KAFKA_OAUTH_CLIENT_ID`, `KAFKA_OAUTH_CLIENT_SECRET_FILE` or `KAFKA_OAUTH_CLIENT_SECRET`, `KAFKA_OAUTH_SCOPE` | OAUTHBEARER with OIDC client credentials |
    /// | `KAFKA_PARTITIONER` | `java` (default) or `librdkafka` |
    pub fn from_env() -> Result<KafkaConfig, Error> {
        KafkaConfig::from_lookup(|name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    fn from_lookup(var: impl Fn(&str) -> Option<String>) -> Result<KafkaConfig, Error> {
        let mut config = KafkaConfig::new(var("KAFKA_BOOTSTRAP").unwrap_or_else(|| "127.0.0.1:19092".to_owned()));
        let ca = var("KAFKA_TLS_CA_FILE");
        let cert = var("KAFKA_TLS_CERT_FILE");
        let key = var("KAFKA_TLS_KEY_FILE");
        let tls_on = match var("KAFKA_TLS").as_deref() {
            None => false,
            Some("true" | "1" | "yes") => true,
            Some("false" | "0" | "no") => false,
            Some(other) => return Err(Error::Config(format!("KAFKA_TLS={other:?}: expected true or false"))),
        };
        if tls_on || ca.is_some() || cert.is_some() || key.is_some() {
            let mut tls = KafkaTls::new();
            if let Some(ca) = ca {
                tls = tls.ca_file(ca);
            }
            match (cert, key) {
                (Some(c), Some(k)) => tls = tls.client_certificate(c, k),
                (None, None) => {}
                _ => return Err(Error::Config("KAFKA_TLS_CERT_FILE and KAFKA_TLS_KEY_FILE go together".into())),
            }
            config = config.tls(tls);
        }
        let secret = |file: &str, value: &str| match (var(file), var(value)) {
            (Some(path), _) => Some(Secret::from_file(path)),
            (None, Some(v)) => Some(Secret::new(v)),
            (None, None) => None,
        };
        if let Some(mechanism) = var("KAFKA_SASL_MECHANISM") {
            let missing = |what: &str| Error::Config(format!("KAFKA_SASL_MECHANISM={mechanism} needs {what}"));
            let sasl = if mechanism.eq_ignore_ascii_case("OAUTHBEARER") {
                let endpoint =
                    var("KAFKA_OAUTH_TOKEN_ENDPOINT").ok_or_else(|| missing("KAFKA_OAUTH_TOKEN_ENDPOINT"))?;
                let client = var("KAFKA_OAUTH_CLIENT_ID").ok_or_else(|| missing("KAFKA_OAUTH_CLIENT_ID"))?;
                let secret = secret("KAFKA_OAUTH_CLIENT_SECRET_FILE", "KAFKA_OAUTH_CLIENT_SECRET")
                    .ok_or_else(|| missing("KAFKA_OAUTH_CLIENT_SECRET_FILE or KAFKA_OAUTH_CLIENT_SECRET"))?;
                let sasl = Sasl::oauthbearer_oidc(endpoint, client, secret);
                match var("KAFKA_OAUTH_SCOPE") {
                    Some(scope) => sasl.scope(scope),
                    None => sasl,
                }
            } else {
                let user = var("KAFKA_SASL_USERNAME").ok_or_else(|| missing("KAFKA_SASL_USERNAME"))?;
                let password = secret("KAFKA_SASL_PASSWORD_FILE", "KAFKA_SASL_PASSWORD")
                    .ok_or_else(|| missing("KAFKA_SASL_PASSWORD_FILE or KAFKA_SASL_PASSWORD"))?;
                match mechanism.to_ascii_uppercase().as_str() {
                    "PLAIN" => Sasl::plain(user, password),
                    "SCRAM-SHA-256" => Sasl::scram_sha256(user, password),
                    "SCRAM-SHA-512" => Sasl::scram_sha512(user, password),
                    _ => {
                        return Err(Error::Config(format!(
                            "KAFKA_SASL_MECHANISM={mechanism:?}: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER \
                             (GSSAPI/Kerberos and AWS IAM are not supported)"
                        )));
                    }
                }
            };
            config = config.sasl(sasl);
        }
        match var("KAFKA_PARTITIONER").as_deref() {
            None | Some("java") => {}
            Some("librdkafka") => config = config.partitioner(Partitioner::Librdkafka),
            Some(other) => {
                return Err(Error::Config(format!("KAFKA_PARTITIONER={other:?}: expected java or librdkafka")));
            }
        }
        Ok(config)
    }

    /// Connects with TLS.
    pub fn tls(mut self, tls: KafkaTls) -> KafkaConfig {
        self.tls = Some(tls);
        self
    }

    /// Authenticates with SASL.
    pub fn sasl(mut self, sasl: Sasl) -> KafkaConfig {
        self.sasl = Some(sasl);
        self
    }

    /// Chooses the partitioner for keyed publishes. Default [`Partitioner::JavaCompatible`].
    pub fn partitioner(mut self, partitioner: Partitioner) -> KafkaConfig {
        self.partitioner = partitioner;
        self
    }

    /// A librdkafka option applied to every client the gateway makes, after the typed
    /// settings above (so it can override them). Options the gateway relies on
    /// (idempotence, acks, offset handling) cannot be overridden. Values of options whose
    /// names say they are secret (`*password*`, `*secret*`, `*.pem`, `*jaas*`,
    /// `sasl.oauthbearer.config`) are redacted in `Debug` output.
    pub fn option(mut self, key: impl Into<String>, value: impl Into<String>) -> KafkaConfig {
        self.options.push((key.into(), value.into()));
        self
    }

    /// The bootstrap servers.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The `security.protocol` the typed settings give (an explicit
    /// [`option`](KafkaConfig::option) overrides it).
    pub fn security_protocol(&self) -> &'static str {
        match (self.tls.is_some(), self.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    /// The librdkafka settings of this configuration (bootstrap, security, raw options), in
    /// order, to give your own librdkafka clients (an admin client, say) the same access as
    /// the gateway's. They include the secrets, read now: handle them as such.
    pub fn to_librdkafka(&self) -> Result<Vec<(String, String)>, Error> {
        let mut out: Vec<(String, String)> = Vec::new();
        let mut set = |k: &str, v: String| out.push((k.to_owned(), v));
        set("bootstrap.servers", self.bootstrap.clone());
        set("security.protocol", self.security_protocol().to_owned());
        if let Some(tls) = &self.tls {
            if let Some(ca) = &tls.ca_file {
                set("ssl.ca.location", path(ca));
            }
            if let Some((cert, key)) = &tls.client_cert {
                set("ssl.certificate.location", path(cert));
                set("ssl.key.location", path(key));
            }
            if let Some(p) = &tls.key_password {
                set("ssl.key.password", p.reveal()?);
            }
        }
        match self.sasl.as_ref().map(|s| &s.0) {
            None => {}
            Some(SaslKind::Password { mechanism, username, password }) => {
                set("sasl.mechanism", (*mechanism).to_owned());
                set("sasl.username", username.clone());
                set("sasl.password", password.reveal()?);
            }
            Some(SaslKind::Oidc { token_endpoint, client_id, client_secret, scope }) => {
                set("sasl.mechanism", "OAUTHBEARER".to_owned());
                set("sasl.oauthbearer.method", "oidc".to_owned());
                set("sasl.oauthbearer.token.endpoint.url", token_endpoint.clone());
                set("sasl.oauthbearer.client.id", client_id.clone());
                set("sasl.oauthbearer.client.secret", client_secret.reveal()?);
                if let Some(scope) = scope {
                    set("sasl.oauthbearer.scope", scope.clone());
                }
            }
        }
        out.extend(self.options.iter().cloned());
        Ok(out)
    }

    /// The librdkafka configuration every client starts from: [`KafkaConfig::to_librdkafka`].
    pub(crate) fn client_config(&self) -> Result<ClientConfig, Error> {
        let mut c = ClientConfig::new();
        for (k, v) in self.to_librdkafka()? {
            c.set(k, v);
        }
        Ok(c)
    }

    /// The partitioner's librdkafka name (a producer setting).
    pub(crate) fn partitioner_name(&self) -> &'static str {
        self.partitioner.librdkafka_name()
    }
}

fn path(p: &std::path::Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Whether a librdkafka option's value is a secret.
fn is_secret_option(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    ["password", "secret", ".pem", "jaas", "sasl.oauthbearer.config"].iter().any(|s| k.contains(s))
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Options<'a>(&'a [(String, String)]);
        impl fmt::Debug for Options<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_map()
                    .entries(
                        self.0.iter().map(|(k, v)| (k, if is_secret_option(k) { "<redacted>" } else { v.as_str() })),
                    )
                    .finish()
            }
        }
        f.debug_struct("KafkaConfig")
            .field("bootstrap", &self.bootstrap)
            .field("security_protocol", &self.security_protocol())
            .field("tls", &self.tls)
            .field("sasl", &self.sasl)
            .field("partitioner", &self.partitioner)
            .field("options", &Options(&self.options))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn from(vars: &[(&str, &str)]) -> Result<KafkaConfig, Error> {
        let vars: HashMap<String, String> = vars.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        KafkaConfig::from_lookup(|name| vars.get(name).cloned())
    }

    #[test]
    fn the_environment_describes_tls_sasl_and_the_partitioner() {
        let c = from(&[
            ("KAFKA_BOOTSTRAP", "b:9094"),
            ("KAFKA_TLS_CA_FILE", "/ca.pem"),
            ("KAFKA_SASL_MECHANISM", "scram-sha-512"),
            ("KAFKA_SASL_USERNAME", "gw"),
            ("KAFKA_SASL_PASSWORD", "s3cr3t-pw"),
        ])
        .expect("config");
        assert_eq!(c.security_protocol(), "SASL_SSL");
        let rd = c.client_config().expect("librdkafka config");
        assert_eq!(rd.get("sasl.mechanism"), Some("SCRAM-SHA-512"));
        assert_eq!(rd.get("sasl.password"), Some("s3cr3t-pw"));
        assert_eq!(rd.get("ssl.ca.location"), Some("/ca.pem"));
        let settings = c.to_librdkafka().expect("settings");
        assert!(
            settings.contains(&("sasl.password".to_owned(), "s3cr3t-pw".to_owned())),
            "the real secret, for clients"
        );
        assert_eq!(c.partitioner_name(), "murmur2_random", "Java-compatible by default");
        let c = from(&[
            ("KAFKA_TLS_CERT_FILE", "/c.pem"),
            ("KAFKA_TLS_KEY_FILE", "/k.pem"),
            ("KAFKA_PARTITIONER", "librdkafka"),
        ])
        .expect("config");
        assert_eq!(c.security_protocol(), "SSL");
        assert_eq!(c.partitioner_name(), "consistent_random");
        assert_eq!(from(&[]).expect("config").security_protocol(), "PLAINTEXT");
        for bad in [
            vec![("KAFKA_SASL_MECHANISM", "GSSAPI"), ("KAFKA_SASL_USERNAME", "u"), ("KAFKA_SASL_PASSWORD", "p")],
            vec![("KAFKA_SASL_MECHANISM", "PLAIN")],
            vec![("KAFKA_TLS_CERT_FILE", "/c.pem")],
            vec![("KAFKA_PARTITIONER", "crc")],
        ] {
            assert!(matches!(from(&bad), Err(Error::Config(_))), "{bad:?}");
        }
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        let c = KafkaConfig::new("b:9094")
            .tls(KafkaTls::new().client_certificate("/c.pem", "/k.pem").client_key_password(Secret::new("keypw-123")))
            .sasl(Sasl::oauthbearer_oidc("https://idp/token", "gw", Secret::new("client-secret-456")))
            .option("sasl.password", "raw-pw-789")
            .option("ssl.key.pem", "-----BEGIN PRIVATE KEY----- raw")
            .option("linger.ms", "5");
        let text = format!("{c:?}");
        for secret in ["keypw-123", "client-secret-456", "raw-pw-789", "BEGIN PRIVATE KEY"] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
        assert!(text.contains("linger.ms") && text.contains("\"5\""), "{text}");
    }
}
