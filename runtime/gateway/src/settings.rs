//! The configuration file (`kafkasocks.toml`) and its `KAFKASOCKS_*` environment
//! overrides. The structs below are the only description of the settings: serde reads them,
//! schemars describes them (doc comments and defaults), and `kafkasocks config reference`
//! writes docs/configuration.md from that description.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Prefix of the environment variables that override settings.
pub(crate) const ENV_PREFIX: &str = "KAFKASOCKS_";

/// A `kafkasocks serve` configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Settings {
    /// The WebSocket listener, TLS, the admin port, shutdown.
    pub(crate) server: Server,
    /// Which browser pages may open sessions.
    pub(crate) origins: Origins,
    /// The Kafka cluster.
    pub(crate) kafka: Kafka,
    /// Exactly-once publishes across the gateway nodes of one deployment.
    pub(crate) cluster: Option<Cluster>,
    /// A Confluent-compatible Schema Registry.
    pub(crate) schema_registry: Option<SchemaRegistry>,
    /// Who may connect.
    pub(crate) auth: Auth,
    /// What principals may do on which streams, with which keys.
    pub(crate) permissions: Option<PermissionRules>,
    /// The streams: the .proto files whose `(kafkasocks.stream)` methods are served.
    pub(crate) proto: Proto,
    /// Per-stream rules, by method (`package.Service/Method`): field validation, values from
    /// claims, filters, limits. Not settable from the environment.
    pub(crate) streams: BTreeMap<String, StreamRules>,
    /// Bounds on every resource (the runtime's `Limits`).
    pub(crate) limits: kafkasocks::Limits,
    /// Logs.
    pub(crate) log: Log,
    /// OpenTelemetry traces.
    pub(crate) telemetry: Telemetry,
}

/// `[server]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Server {
    /// Address of the WebSocket listener (`ws://`, or `wss://` with `[server.tls]`).
    /// Loopback by default: serving other hosts is a choice (and without TLS, a warning).
    #[schemars(with = "String")]
    pub(crate) listen: SocketAddr,
    /// Address of the admin listener: `/metrics`, `/livez`, `/readyz`. Empty: none.
    pub(crate) admin_listen: Option<String>,
    /// The id this node sends in Welcome and logs. Default: a random one per process.
    pub(crate) server_id: Option<String>,
    /// Proxies (addresses or CIDR blocks) whose `X-Forwarded-For` is believed. Default none:
    /// the TCP peer is the client.
    pub(crate) trusted_proxies: Vec<String>,
    /// Longest a SIGTERM or SIGINT shutdown may take before the process exits anyway: at
    /// least `limits.drain_timeout` + `limits.close_timeout` + 10 s (the gateway's own
    /// drain), and less than the orchestrator's grace period (Kubernetes'
    /// `terminationGracePeriodSeconds`, default 30 s).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub(crate) shutdown_grace: Duration,
    /// TLS for the WebSocket listener (`wss://`).
    pub(crate) tls: Option<ServerTls>,
}

impl Default for Server {
    fn default() -> Server {
        Server {
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            admin_listen: None,
            server_id: None,
            trusted_proxies: Vec::new(),
            shutdown_grace: Duration::from_secs(28),
            tls: None,
        }
    }
}

/// `[server.tls]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct ServerTls {
    /// PEM certificate chain, leaf first.
    pub(crate) cert_chain_file: PathBuf,
    /// PEM private key of the leaf certificate.
    pub(crate) private_key_file: PathBuf,
}

/// `[origins]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Origins {
    /// Origins of the pages that may open sessions (`https://app.example.com`, exact scheme,
    /// host and port). Default none: browsers are refused (403).
    pub(crate) allow: Vec<String>,
    /// Pages of any origin may open sessions. Logged as a warning.
    pub(crate) allow_any: bool,
    /// Refuse requests without an `Origin` header (non-browser clients send none).
    pub(crate) refuse_missing: bool,
    /// `Host` names this gateway answers to, against DNS rebinding. Default: any.
    pub(crate) hosts: Vec<String>,
}

/// `[kafka]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Kafka {
    /// Bootstrap servers, `host:port[,host:port]`.
    pub(crate) bootstrap: String,
    /// Partitioner for keyed publishes: `java` (what Kafka's Java producer picks) or
    /// `librdkafka` (`consistent_random`).
    pub(crate) partitioner: String,
    /// TLS to the brokers.
    pub(crate) tls: Option<KafkaTls>,
    /// SASL authentication.
    pub(crate) sasl: Option<KafkaSasl>,
    /// Raw librdkafka options for every client the gateway makes (after the typed ones).
    /// Not settable from the environment.
    pub(crate) options: BTreeMap<String, String>,
    /// A compacted topic through which the nodes of a deployment (and a restarted node)
    /// share their key indexes, created when missing; only the gateways may write to it.
    /// Default none: each node builds its own index after it starts.
    pub(crate) key_index_topic: Option<String>,
}

impl Default for Kafka {
    fn default() -> Kafka {
        Kafka {
            bootstrap: "127.0.0.1:19092".into(),
            partitioner: "java".into(),
            tls: None,
            sasl: None,
            options: BTreeMap::new(),
            key_index_topic: None,
        }
    }
}

/// `[kafka.tls]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct KafkaTls {
    /// PEM CA certificates to verify the brokers with. Default: the system's.
    pub(crate) ca_file: Option<PathBuf>,
    /// PEM client certificate (mTLS), with `key_file`.
    pub(crate) cert_file: Option<PathBuf>,
    /// PEM client key (mTLS).
    pub(crate) key_file: Option<PathBuf>,
    /// File holding the client key's password, if it is encrypted.
    pub(crate) key_password_file: Option<PathBuf>,
}

/// `[kafka.sasl]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct KafkaSasl {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER` (OIDC client credentials).
    pub(crate) mechanism: String,
    /// The user (PLAIN, SCRAM).
    pub(crate) username: Option<String>,
    /// Its password. Prefer `password_file`.
    pub(crate) password: Option<String>,
    /// A file holding its password (read at start).
    pub(crate) password_file: Option<PathBuf>,
    /// OAUTHBEARER: the token endpoint.
    pub(crate) oauth_token_endpoint: Option<String>,
    /// OAUTHBEARER: the client id.
    pub(crate) oauth_client_id: Option<String>,
    /// OAUTHBEARER: the client secret. Prefer `oauth_client_secret_file`.
    pub(crate) oauth_client_secret: Option<String>,
    /// OAUTHBEARER: a file holding the client secret.
    pub(crate) oauth_client_secret_file: Option<PathBuf>,
    /// OAUTHBEARER: the scope to ask for.
    pub(crate) oauth_scope: Option<String>,
}

/// `[cluster]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Cluster {
    /// The deployment's name: every node of it uses the same one (topics
    /// `kafkasocks.<name>.requests` and `.receipts`).
    pub(crate) name: String,
    /// Partitions of those topics. Default 8.
    pub(crate) partitions: Option<u32>,
}

/// `[schema_registry]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SchemaRegistry {
    /// Base URL, e.g. `http://127.0.0.1:18081/apis/ccompat/v7`.
    pub(crate) url: String,
    /// `auto_register` (development), `lookup_only` or `use_latest`.
    pub(crate) mode: Option<String>,
    /// HTTP basic authentication: the user.
    pub(crate) username: Option<String>,
    /// Its password. Prefer `password_file`.
    pub(crate) password: Option<String>,
    /// A file holding its password.
    pub(crate) password_file: Option<PathBuf>,
    /// A bearer token instead. Prefer `bearer_token_file`.
    pub(crate) bearer_token: Option<String>,
    /// A file holding the bearer token.
    pub(crate) bearer_token_file: Option<PathBuf>,
    /// PEM CA certificates for an `https` registry. Default: the system's.
    pub(crate) ca_file: Option<PathBuf>,
}

/// `[auth]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Auth {
    /// Let anyone in without a token, as the anonymous principal. Logged as a warning. A
    /// gateway with neither this nor `[auth.jwt]` does not start.
    pub(crate) anonymous: bool,
    /// JWTs checked against configured keys.
    pub(crate) jwt: Option<Jwt>,
}

/// `[auth.jwt]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Jwt {
    /// The `iss` tokens must carry.
    pub(crate) issuer: Option<String>,
    /// The `aud` tokens must carry. Required unless `skip_audience_check`.
    pub(crate) audience: Option<String>,
    /// Accept tokens of any audience (only when this gateway is the issuer's sole audience).
    pub(crate) skip_audience_check: bool,
    /// Clock skew allowed on `exp`, `nbf` and `iat` (the runtime's
    /// `JwtConfig::DEFAULT_LEEWAY`).
    #[serde(with = "humantime_serde")]
    #[schemars(with = "String")]
    pub(crate) leeway: Duration,
    /// The claim that names the principal. Default `sub`.
    pub(crate) subject_claim: Option<String>,
    /// Public keys in PEM files, each with its algorithm (`{ pem_file = "...", algorithm =
    /// "EdDSA" }`), or JWK files (`{ jwk_file = "..." }`). Not settable from the environment.
    pub(crate) keys: Vec<JwtKey>,
    /// A JWKS URL (https) to fetch keys from, refreshed in the background.
    pub(crate) jwks_url: Option<String>,
    /// Allow an `http://` JWKS URL (tests only). Logged as a warning.
    pub(crate) allow_http_jwks: bool,
}

impl Default for Jwt {
    fn default() -> Jwt {
        Jwt {
            issuer: None,
            audience: None,
            skip_audience_check: false,
            leeway: kafkasocks::JwtConfig::DEFAULT_LEEWAY,
            subject_claim: None,
            keys: Vec::new(),
            jwks_url: None,
            allow_http_jwks: false,
        }
    }
}

/// One key of `[auth.jwt]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct JwtKey {
    /// A PEM public key (or, for HS*, not allowed: use a JWK).
    pub(crate) pem_file: Option<PathBuf>,
    /// The algorithm of the PEM key: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384,
    /// EdDSA.
    pub(crate) algorithm: Option<String>,
    /// A JWK file (its `alg` names the algorithm).
    pub(crate) jwk_file: Option<PathBuf>,
    /// The `kid` tokens signed with this key carry.
    pub(crate) kid: Option<String>,
}

/// `[permissions]`: without it, every authenticated principal may use every stream.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct PermissionRules {
    /// Grants to every principal: `{ streams = "chat.v1.ChatStreams/*", operations =
    /// ["subscribe", "publish"] }` (operations default to both).
    pub(crate) grant: Vec<Grant>,
    /// Claims whose strings grant more, per principal: `subscribe:<pattern>`,
    /// `publish:<pattern>`, `*:<pattern>`.
    pub(crate) grant_from_claims: Vec<String>,
    /// Kafka keys of matching streams limited to the strings of a claim:
    /// `{ streams = "chat.v1.ChatStreams/*", claim = "rooms" }`.
    pub(crate) pin_keys: Vec<Pin>,
}

/// A grant of `[permissions]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Grant {
    /// A method pattern (`*` matches any run of characters).
    pub(crate) streams: String,
    /// `subscribe` and/or `publish`. Default both.
    pub(crate) operations: Vec<String>,
}

/// A key pin of `[permissions]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Pin {
    /// A method pattern.
    pub(crate) streams: String,
    /// The claim listing the allowed keys (`*` in it allows any).
    pub(crate) claim: String,
}

/// `[proto]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Proto {
    /// .proto files to serve (paths, relative to the config file's folder), or with
    /// `descriptor_set` the proto names of its files to serve (none: all).
    pub(crate) files: Vec<PathBuf>,
    /// Include folders for imports (relative to the config file's folder). Default: each
    /// file's folder. `kafkasocks/options.proto` and `google/protobuf/*` always resolve.
    pub(crate) includes: Vec<PathBuf>,
    /// An encoded FileDescriptorSet (`buf build -o set.binpb`, `protoc --include_imports
    /// --descriptor_set_out`) instead of .proto sources.
    pub(crate) descriptor_set: Option<PathBuf>,
    /// Serve only these services (full names). Default: every service with stream methods.
    pub(crate) services: Vec<String>,
}

/// `[streams."<package.Service/Method>"]`
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct StreamRules {
    /// Largest request message, in bytes. Default: the gateway's `limits.max_message_bytes`.
    pub(crate) max_request_bytes: Option<usize>,
    /// Publishes per second of one principal on this stream (burst the same). Default: no
    /// bound beyond the gateway's.
    pub(crate) max_publishes_per_second: Option<u32>,
    /// Rules on top-level fields of the request, by field name.
    pub(crate) fields: BTreeMap<String, FieldRule>,
    /// Subscriptions: deliver only records whose field `record_field` equals the request's
    /// field `request_field` (when that is set): `{ record_field = "user", request_field =
    /// "user" }`.
    pub(crate) filter: Option<Filter>,
}

/// A rule on one request field; checks run in the order listed here, after the changes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct FieldRule {
    /// Publishes: the field is always set from this claim of the token (`sub` for the
    /// principal's subject), whatever the client sent; a principal without it is refused
    /// with UNAUTHENTICATED.
    pub(crate) from_claim: Option<String>,
    /// Publishes: an unset integer field becomes the gateway's clock, in Unix milliseconds.
    pub(crate) default_now_ms: bool,
    /// Strings: leading and trailing white space is removed first.
    pub(crate) trim: bool,
    /// The field must be set (non-empty, non-zero).
    pub(crate) required: bool,
    /// Strings: fewest characters (Unicode scalar values).
    pub(crate) min_chars: Option<usize>,
    /// Strings: most characters.
    pub(crate) max_chars: Option<usize>,
    /// Strings: a regular expression the whole value must match (Rust `regex` syntax).
    pub(crate) pattern: Option<String>,
    /// Strings: the only values allowed.
    pub(crate) one_of: Vec<String>,
    /// Numbers: smallest value.
    pub(crate) min: Option<f64>,
    /// Numbers: largest value.
    pub(crate) max: Option<f64>,
    /// The INVALID_ARGUMENT message when a check fails. Default: one naming the rule.
    pub(crate) message: Option<String>,
}

/// A subscription filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Filter {
    /// A field of the record (response) message.
    pub(crate) record_field: String,
    /// A field of the request message.
    pub(crate) request_field: String,
}

/// `[log]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Log {
    /// `text` or `json` (one JSON object per line; `--log-format` overrides it).
    pub(crate) format: String,
    /// A tracing filter (`info`, `info,kafkasocks=debug`). `RUST_LOG` overrides it.
    pub(crate) filter: String,
}

impl Default for Log {
    fn default() -> Log {
        Log { format: "text".into(), filter: "info".into() }
    }
}

/// `[telemetry]`
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct Telemetry {
    /// An OTLP/HTTP endpoint for traces (`http://collector:4318`). Default none: no
    /// export. `OTEL_EXPORTER_OTLP_ENDPOINT` is honoured too.
    pub(crate) otlp_endpoint: Option<String>,
    /// The `service.name` of the traces.
    pub(crate) service_name: String,
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry { otlp_endpoint: None, service_name: "kafkasocks".into() }
    }
}

/// Settings read from a file, with the environment applied, and where the file is.
#[derive(Debug, Clone)]
pub(crate) struct Loaded {
    pub(crate) settings: Settings,
    /// `KAFKASOCKS_*` variables that name no setting (a typo, or another tool's variable):
    /// reported as warnings, not errors, since the prefix is shared with scripts and tests.
    pub(crate) unknown_env: Vec<String>,
    /// The config file's folder: relative paths are relative to it.
    pub(crate) base: PathBuf,
}

impl Loaded {
    /// A path of the config, made absolute against the config file's folder.
    pub(crate) fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base.join(p) }
    }
}

/// Reads `path` (TOML), then applies every `KAFKASOCKS_*` variable of `env`.
pub(crate) fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Loaded> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut table: toml::Table =
        toml::from_str(&text).with_context(|| format!("{} is not valid TOML", path.display()))?;
    let unknown_env = apply_env(&mut table, env)?;
    let settings: Settings =
        Settings::deserialize(toml::Value::Table(table)).with_context(|| format!("in {}", path.display()))?;
    let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
    Ok(Loaded { settings, base, unknown_env })
}

/// A setting, or a section of them: its path in the file, its variable, its type.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Leaf {
    pub(crate) path: Vec<String>,
    pub(crate) kind: LeafKind,
    pub(crate) description: String,
    pub(crate) default: Option<serde_json::Value>,
}

/// The type of a [`Leaf`], as the environment gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LeafKind {
    String,
    Integer,
    Number,
    Boolean,
    /// Comma-separated strings.
    List,
    /// A value the environment cannot give (a map, a list of tables): file only.
    FileOnly,
    /// A table of settings (`[server]`), a list of tables (`[[...]]`) or a map of tables.
    Section,
}

impl Leaf {
    /// `KAFKASOCKS_SERVER_LISTEN` for `server.listen`; none for what only the file can set.
    pub(crate) fn env_var(&self) -> Option<String> {
        let settable = !matches!(self.kind, LeafKind::FileOnly | LeafKind::Section)
            && self.path.iter().all(|p| !p.contains('[') && !p.contains('<'));
        settable.then(|| format!("{ENV_PREFIX}{}", self.path.join("_").to_ascii_uppercase()))
    }

    /// `server.listen`.
    pub(crate) fn key(&self) -> String {
        self.path.join(".")
    }
}

/// Every setting, in file order, from the schema of [`Settings`].
pub(crate) fn leaves() -> Vec<Leaf> {
    let schema = serde_json::to_value(schemars::schema_for!(Settings)).unwrap_or_default();
    let defs = schema.get("$defs").cloned().unwrap_or_default();
    let defaults = serde_json::to_value(documented_defaults()).unwrap_or_default();
    let mut out = Vec::new();
    walk(&schema, &defs, &defaults, &mut Vec::new(), &mut out);
    out
}

/// [`Settings::default`] with every optional section present (at its own defaults) and one
/// element in each list or map of tables: where the reference reads each default from.
fn documented_defaults() -> Settings {
    let mut s = Settings::default();
    s.server.tls = Some(ServerTls::default());
    s.kafka.tls = Some(KafkaTls::default());
    s.kafka.sasl = Some(KafkaSasl::default());
    s.cluster = Some(Cluster::default());
    s.schema_registry = Some(SchemaRegistry::default());
    s.auth.jwt = Some(Jwt { keys: vec![JwtKey::default()], ..Jwt::default() });
    s.permissions = Some(PermissionRules {
        grant: vec![Grant::default()],
        pin_keys: vec![Pin::default()],
        ..PermissionRules::default()
    });
    let rules = StreamRules {
        fields: BTreeMap::from([("<name>".to_owned(), FieldRule::default())]),
        filter: Some(Filter::default()),
        ..StreamRules::default()
    };
    s.streams.insert("<name>".to_owned(), rules);
    s
}

fn resolve<'a>(node: &'a serde_json::Value, defs: &'a serde_json::Value) -> &'a serde_json::Value {
    match node.get("$ref").and_then(|r| r.as_str()).and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => defs.get(name).map_or(node, |d| resolve(d, defs)),
        None => node,
    }
}

/// The non-null alternative of an `Option<T>` schema (`anyOf: [T, null]` or `type: [t, "null"]`).
fn non_null(node: &serde_json::Value, defs: &serde_json::Value) -> serde_json::Value {
    let node = resolve(node, defs);
    if let Some(any) = node.get("anyOf").and_then(|a| a.as_array())
        && let Some(t) = any.iter().find(|s| s.get("type").and_then(|t| t.as_str()) != Some("null"))
    {
        return non_null(t, defs);
    }
    let mut node = node.clone();
    if let Some(types) = node.get("type").and_then(|t| t.as_array()).cloned()
        && let Some(t) = types.iter().find(|t| t.as_str() != Some("null"))
    {
        node["type"] = t.clone();
    }
    node
}

fn walk(
    node: &serde_json::Value,
    defs: &serde_json::Value,
    defaults: &serde_json::Value,
    path: &mut Vec<String>,
    out: &mut Vec<Leaf>,
) {
    let node = non_null(node, defs);
    let Some(props) = node.get("properties").and_then(|p| p.as_object()) else { return };
    let null = serde_json::Value::Null;
    // Settings first, then the sections, each group in alphabetical order: not the map's
    // order, which depends on whether some crate of the build turned on serde_json's
    // `preserve_order` (feature unification would otherwise change the reference).
    let is_section = |prop: &serde_json::Value| {
        let inner = non_null(prop, defs);
        let has = |n: Option<serde_json::Value>| n.is_some_and(|n| n.get("properties").is_some());
        inner.get("properties").is_some()
            || has(inner.get("items").map(|i| non_null(i, defs)))
            || has(inner.get("additionalProperties").filter(|v| v.is_object()).map(|v| non_null(v, defs)))
    };
    let mut props: Vec<(&String, &serde_json::Value)> = props.iter().collect();
    props.sort_by(|(a, pa), (b, pb)| (is_section(pa), a.as_str()).cmp(&(is_section(pb), b.as_str())));
    for (name, prop) in props {
        let description = prop
            .get("description")
            .or_else(|| resolve(prop, defs).get("description"))
            .and_then(|d| d.as_str())
            .unwrap_or("")
            .to_owned();
        let inner = non_null(prop, defs);
        let default = defaults.get(name.as_str()).filter(|d| !d.is_null()).cloned();
        // The documented element of a list or map of tables.
        let element = |d: &serde_json::Value| match d {
            serde_json::Value::Array(a) => a.first().cloned().unwrap_or_default(),
            serde_json::Value::Object(o) if o.contains_key("<name>") => o["<name>"].clone(),
            other => other.clone(),
        };
        let ty = inner.get("type").and_then(|t| t.as_str()).unwrap_or("");
        let items = inner.get("items").map(|i| non_null(i, defs));
        let values = inner.get("additionalProperties").filter(|v| v.is_object()).map(|v| non_null(v, defs));
        // A table, a list of tables or a map of tables: a section, then its own settings.
        let (child, child_node) = if inner.get("properties").is_some() {
            (name.clone(), Some(inner.clone()))
        } else if let Some(i) = items.as_ref().filter(|i| i.get("properties").is_some()) {
            (format!("{name}[]"), Some(i.clone()))
        } else if let Some(v) = values.as_ref().filter(|v| v.get("properties").is_some()) {
            (format!("{name}.<name>"), Some(v.clone()))
        } else {
            (name.clone(), None)
        };
        path.push(child);
        match child_node {
            Some(section) => {
                out.push(Leaf { path: path.clone(), kind: LeafKind::Section, description, default: None });
                walk(&section, defs, &element(defaults.get(name.as_str()).unwrap_or(&null)), path, out);
            }
            None => {
                let kind = match ty {
                    "string" => LeafKind::String,
                    "integer" => LeafKind::Integer,
                    "number" => LeafKind::Number,
                    "boolean" => LeafKind::Boolean,
                    "array" if items.and_then(|i| i.get("type").cloned()) == Some("string".into()) => LeafKind::List,
                    _ => LeafKind::FileOnly,
                };
                out.push(Leaf { path: path.clone(), kind, description, default });
            }
        }
        path.pop();
    }
}

/// Sets the settings named by `KAFKASOCKS_*` variables in `table`; returns the variables
/// with the prefix that name no setting (the caller warns about them, so a typo is seen).
/// A variable of a setting with a value of the wrong type is an error.
fn apply_env(table: &mut toml::Table, env: impl IntoIterator<Item = (String, String)>) -> anyhow::Result<Vec<String>> {
    let leaves = leaves();
    let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    vars.sort();
    let mut unknown = Vec::new();
    for (var, value) in vars {
        // Variables of the binary itself, not settings.
        if matches!(var.as_str(), "KAFKASOCKS_CONFIG" | "KAFKASOCKS_LOG_FORMAT") {
            continue;
        }
        let Some(leaf) = leaves.iter().find(|l| l.env_var().as_deref() == Some(var.as_str())) else {
            unknown.push(var);
            continue;
        };
        let parsed = match leaf.kind {
            LeafKind::String => toml::Value::String(value.clone()),
            LeafKind::Integer => toml::Value::Integer(
                value.trim().parse().with_context(|| format!("{var}={value:?}: expected an integer"))?,
            ),
            LeafKind::Number => {
                toml::Value::Float(value.trim().parse().with_context(|| format!("{var}={value:?}: expected a number"))?)
            }
            LeafKind::Boolean => match value.trim() {
                "true" | "1" | "yes" => toml::Value::Boolean(true),
                "false" | "0" | "no" => toml::Value::Boolean(false),
                _ => bail!("{var}={value:?}: expected true or false"),
            },
            LeafKind::List => toml::Value::Array(
                value
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| toml::Value::String(s.to_owned()))
                    .collect(),
            ),
            LeafKind::FileOnly | LeafKind::Section => continue,
        };
        let mut at = &mut *table;
        let (last, parents) = leaf.path.split_last().context("empty setting path")?;
        for p in parents {
            let entry = at.entry(p.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            at = entry.as_table_mut().with_context(|| format!("{var}: {p} is not a table in the file"))?;
        }
        at.insert(last.clone(), parsed);
    }
    Ok(unknown)
}

/// Whether a setting holds a secret (its value is never printed): `*password*`, `*secret*`,
/// `*token*` (but not the `*_file` naming where one is), and librdkafka options as the
/// runtime redacts them (`*password*`, `*secret*`, `*.pem`, `*jaas*`, `sasl.oauthbearer.config`).
pub(crate) fn is_secret(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    let sensitive = |name: &str| name.contains("password") || name.contains("secret") || name.contains("jaas");
    if let Some(option) = k.strip_prefix("kafka.options.") {
        return sensitive(option) || option.ends_with(".pem") || option == "sasl.oauthbearer.config";
    }
    let last = k.rsplit('.').next().unwrap_or(&k);
    (sensitive(last) || last.contains("token")) && !last.ends_with("_file") && !last.ends_with("endpoint")
}

/// The effective settings as TOML, with secret values replaced by `<redacted>`.
pub(crate) fn redacted_toml(settings: &Settings) -> anyhow::Result<String> {
    let mut value = toml::Value::try_from(settings).context("serializing the settings")?;
    redact(&mut value, "");
    Ok(toml::to_string_pretty(&value)?)
}

fn redact(value: &mut toml::Value, path: &str) {
    match value {
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                if is_secret(&p) && !v.is_table() {
                    *v = toml::Value::String("<redacted>".into());
                } else {
                    redact(v, &p);
                }
            }
        }
        toml::Value::Array(a) => a.iter_mut().for_each(|v| redact(v, path)),
        _ => {}
    }
}

/// docs/configuration.md, from the schema: every setting, its variable, default and reason.
pub(crate) fn reference() -> String {
    let mut out = String::from(
        "<!-- @generated by `kafkasocks config reference`: edit the doc comments of \
         runtime/gateway/src/settings.rs (and of runtime/src/config.rs for [limits]), then run \
         `KAFKASOCKS_BLESS=1 cargo test -p kafkasocks-gateway`. A test fails when this file is stale. -->\n\n\
         # Configuration of `kafkasocks serve`\n\n\
         `kafkasocks serve --config kafkasocks.toml` reads a TOML file. Every setting below that has a \
         variable can also be set in the environment (`KAFKASOCKS_`, then the setting's path in upper case \
         with `_` for `.`), which wins over the file; lists are comma-separated there. Tables, lists of \
         tables and maps are set in the file only. An unknown key in the file is an error; a `KAFKASOCKS_*` \
         variable that names no setting is reported as a warning at start and by `config check`. Relative paths are relative to the config file's folder. Durations are \
         written like `10s`, `1m 30s` or `500ms`.\n\n\
         `kafkasocks config check --config kafkasocks.toml` validates a file (the environment applied, the \
         .proto files loaded, every stream rule checked against its message) and prints the effective \
         settings with secrets redacted. An example: `examples/chat/kafkasocks.toml`.\n",
    );
    // Rustdoc links of the runtime's docs (`[`Limits::x`](crate::Limits::x)`, `[`Limits::x`]`): text only.
    let rustdoc_links =
        regex::Regex::new(r"\[(`[^`\]]+`)\](?:\((?:crate|super|self)::[^)]*\))?").expect("a valid regex");
    for leaf in leaves() {
        if leaf.kind == LeafKind::Section {
            out.push_str(&format!("\n## `{}`\n\n{}\n\n", leaf.key(), leaf.description.trim()));
            out.push_str("| setting | environment | default | meaning |\n|---|---|---|---|\n");
            continue;
        }
        let env = leaf.env_var().map_or_else(|| "*file only*".to_owned(), |v| format!("`{v}`"));
        let default = match &leaf.default {
            None => "none".to_owned(),
            Some(serde_json::Value::String(s)) if s.is_empty() => "none".to_owned(),
            Some(serde_json::Value::Array(a)) if a.is_empty() => "none".to_owned(),
            Some(serde_json::Value::Object(o)) if o.is_empty() => "none".to_owned(),
            Some(serde_json::Value::String(s)) => format!("`{s}`"),
            Some(v) => format!("`{v}`"),
        };
        let description = rustdoc_links
            .replace_all(&leaf.description, "$1")
            .replace("\n\n", "<br>")
            .replace('\n', " ")
            .replace('|', "\\|");
        let name = leaf.path.last().map_or("", String::as_str);
        out.push_str(&format!("| `{name}` | {env} | {default} | {description} |\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(String, String)> {
        vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn load_text(text: &str, vars: &[(&str, &str)]) -> anyhow::Result<Settings> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("k.toml");
        std::fs::write(&path, text)?;
        Ok(load(&path, env(vars))?.settings)
    }

    #[test]
    fn every_leaf_has_a_description_and_a_unique_variable() {
        let leaves = leaves();
        assert!(leaves.len() > 60, "{} settings", leaves.len());
        let mut vars = std::collections::BTreeSet::new();
        for leaf in &leaves {
            assert!(!leaf.description.trim().is_empty(), "{} has no doc comment", leaf.key());
            if let Some(var) = leaf.env_var() {
                assert!(vars.insert(var.clone()), "{var} collides");
            }
        }
        for key in
            ["server.listen", "kafka.bootstrap", "limits.max_connections", "limits.drain_timeout", "auth.anonymous"]
        {
            assert!(leaves.iter().any(|l| l.key() == key && l.env_var().is_some()), "{key}");
        }
    }

    #[test]
    fn the_documented_jwt_leeway_is_the_one_the_runtime_applies() -> anyhow::Result<()> {
        // The reference said "Default 60 s" while the runtime allowed 30 s.
        let runtime = kafkasocks::JwtConfig::DEFAULT_LEEWAY;
        let leaf = leaves().into_iter().find(|l| l.key() == "auth.jwt.leeway").expect("auth.jwt.leeway");
        let documented = leaf.default.as_ref().and_then(|d| d.as_str()).expect("a documented default");
        assert_eq!(humantime::parse_duration(documented)?, runtime, "{documented}");
        assert!(!leaf.description.contains("60"), "{}", leaf.description);
        let s = load_text("[auth.jwt]\nissuer = \"i\"\naudience = \"a\"\n", &[])?;
        assert_eq!(s.auth.jwt.map(|j| j.leeway), Some(runtime), "unset: the runtime's default");
        Ok(())
    }

    #[test]
    fn the_environment_wins_over_the_file_and_typos_are_reported() -> anyhow::Result<()> {
        let s = load_text(
            "[server]\nlisten = \"127.0.0.1:1\"\n[limits]\nmax_connections = 5\n",
            &[
                ("KAFKASOCKS_SERVER_LISTEN", "0.0.0.0:9000"),
                ("KAFKASOCKS_LIMITS_DRAIN_TIMEOUT", "3s"),
                ("KAFKASOCKS_ORIGINS_ALLOW", "https://a.example, https://b.example"),
                ("KAFKASOCKS_KAFKA_SASL_MECHANISM", "PLAIN"),
                ("KAFKASOCKS_AUTH_ANONYMOUS", "true"),
                ("OTHER", "x"),
            ],
        )?;
        assert_eq!(s.server.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(s.limits.max_connections, 5);
        assert_eq!(s.limits.drain_timeout, Duration::from_secs(3));
        assert_eq!(s.origins.allow, ["https://a.example", "https://b.example"]);
        assert_eq!(s.kafka.sasl.map(|s| s.mechanism).as_deref(), Some("PLAIN"));
        assert!(s.auth.anonymous);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("k.toml");
        std::fs::write(&path, "")?;
        let typo = load(&path, env(&[("KAFKASOCKS_SERVER_LISTN", "x"), ("KAFKASOCKS_SERVER_LISTEN", "127.0.0.1:1")]))?;
        assert_eq!(typo.unknown_env, ["KAFKASOCKS_SERVER_LISTN"], "reported, so the caller can warn");
        let bad = load_text("", &[("KAFKASOCKS_LIMITS_MAX_CONNECTIONS", "many")]).expect_err("bad");
        assert!(format!("{bad:#}").contains("expected an integer"), "{bad:#}");
        let unknown = load_text("[server]\nlisen = 1\n", &[]).expect_err("unknown key");
        assert!(format!("{unknown:#}").contains("lisen"), "{unknown:#}");
        Ok(())
    }

    #[test]
    fn secrets_are_redacted() -> anyhow::Result<()> {
        let s = load_text(
            "[kafka.sasl]\nmechanism = \"PLAIN\"\nusername = \"gw\"\npassword = \"hunter2\"\n\
             [kafka.options]\n\"ssl.key.pem\" = \"-----BEGIN\"\n\"linger.ms\" = \"5\"\n\
             [schema_registry]\nurl = \"http://r\"\nbearer_token = \"tok123\"\nbearer_token_file = \"/run/t\"\n",
            &[],
        )?;
        let text = redacted_toml(&s)?;
        for secret in ["hunter2", "-----BEGIN", "tok123"] {
            assert!(!text.contains(secret), "{secret} in\n{text}");
        }
        for shown in ["gw", "/run/t", "\"5\""] {
            assert!(text.contains(shown), "{shown} missing in\n{text}");
        }
        Ok(())
    }

    #[test]
    fn docs_configuration_md_is_generated_from_these_settings() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/configuration.md");
        let expected = reference();
        if std::env::var_os("KAFKASOCKS_BLESS").is_some() {
            std::fs::write(&path, &expected).expect("writing docs/configuration.md");
        }
        let actual = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            actual == expected,
            "docs/configuration.md is stale: run `KAFKASOCKS_BLESS=1 cargo test -p kafkasocks-gateway` \
             (or `kafkasocks config reference > docs/configuration.md`)"
        );
    }
}
