//! From settings to a bound [`Gateway`]: every section of the config becomes the runtime's
//! typed configuration, so whatever the runtime checks (origins, TLS files, Kafka options,
//! the registry's mode) is checked the same way for the binary.

use std::str::FromStr;

use anyhow::{Context, bail};
use kafkasocks::{
    ClusterConfig, Gateway, GatewayBuilder, GatewayConfig, JwtAlgorithm, JwtConfig, KafkaConfig, KafkaTls, Operation,
    OriginPolicy, Partitioner, Permissions, RegistryConfig, RegistryMode, Sasl, Secret, TlsConfig,
};

use crate::settings::{Loaded, Settings};
use crate::streams::{self, Served};

/// What `serve` runs and `config check` reports.
#[derive(Debug)]
pub(crate) struct Assembled {
    pub(crate) builder: GatewayBuilder,
    pub(crate) served: Vec<Served>,
}

/// Checks everything that can be checked without binding or connecting.
pub(crate) fn assemble(loaded: &Loaded) -> anyhow::Result<Assembled> {
    let s = &loaded.settings;
    let (streams, served) = streams::build(loaded).context("[proto]")?;
    let mut builder = Gateway::builder(gateway_config(loaded)?).streams(streams);
    builder = match (&s.auth.jwt, s.auth.anonymous) {
        (Some(_), true) => bail!("[auth]: anonymous = true and [auth.jwt] contradict each other; choose one"),
        (Some(jwt), false) => builder.authenticator(jwt_config(loaded, jwt)?.build().context("[auth.jwt]")?),
        (None, true) => builder.allow_anonymous(),
        (None, false) => bail!(
            "[auth]: nobody could connect: configure [auth.jwt], or let anyone in on purpose with \
             `anonymous = true`"
        ),
    };
    if let Some(p) = &s.permissions {
        builder = builder.permissions(permissions(p)?);
    }
    Ok(Assembled { builder, served })
}

fn gateway_config(loaded: &Loaded) -> anyhow::Result<GatewayConfig> {
    let s: &Settings = &loaded.settings;
    let mut config = GatewayConfig::new(kafka_config(loaded)?)
        .listen(s.server.listen)
        .limits(s.limits.clone())
        .trusted_proxies(s.server.trusted_proxies.iter().cloned());
    if let Some(addr) = s.server.admin_listen.as_deref().filter(|a| !a.is_empty()) {
        config = config.metrics_listen(addr.parse().with_context(|| format!("[server] admin_listen = {addr:?}"))?);
    }
    if let Some(id) = &s.server.server_id {
        config = config.server_id(id.clone());
    }
    if let Some(tls) = &s.server.tls {
        config = config
            .tls(TlsConfig::from_pem_files(loaded.path(&tls.cert_chain_file), loaded.path(&tls.private_key_file)));
    }
    let o = &s.origins;
    let mut origins = o.allow.iter().fold(OriginPolicy::new(), |p, origin| p.allow(origin.clone()));
    if o.allow_any {
        origins = origins.allow_any();
    }
    if o.refuse_missing {
        origins = origins.refuse_missing();
    }
    origins = o.hosts.iter().fold(origins, |p, h| p.allow_host(h.clone()));
    config = config.origins(origins);
    if let Some(topic) = s.kafka.key_index_topic.as_deref().filter(|t| !t.is_empty()) {
        config = config.key_index_topic(topic);
    }
    if let Some(cluster) = &s.cluster {
        if cluster.name.is_empty() {
            bail!("[cluster]: name is required");
        }
        let mut c = ClusterConfig::new(cluster.name.clone());
        if let Some(p) = cluster.partitions {
            c = c.partitions(p);
        }
        config = config.cluster(c);
    }
    if let Some(r) = &s.schema_registry {
        config = config.schema_registry(registry_config(loaded, r)?);
    }
    Ok(config)
}

/// A secret given inline or in a file (the file wins; both is an error).
fn secret(
    loaded: &Loaded,
    what: &str,
    value: &Option<String>,
    file: &Option<std::path::PathBuf>,
) -> anyhow::Result<Option<Secret>> {
    match (value, file) {
        (Some(_), Some(_)) => bail!("{what} and {what}_file: give one"),
        (Some(v), None) => Ok(Some(Secret::new(v.clone()))),
        (None, Some(f)) => Ok(Some(Secret::from_file(loaded.path(f)))),
        (None, None) => Ok(None),
    }
}

fn kafka_config(loaded: &Loaded) -> anyhow::Result<KafkaConfig> {
    let k = &loaded.settings.kafka;
    let mut config = KafkaConfig::new(k.bootstrap.clone());
    config = match k.partitioner.as_str() {
        "java" => config,
        "librdkafka" => config.partitioner(Partitioner::Librdkafka),
        other => bail!("[kafka] partitioner = {other:?}: expected java or librdkafka"),
    };
    if let Some(t) = &k.tls {
        let mut tls = KafkaTls::new();
        if let Some(ca) = &t.ca_file {
            tls = tls.ca_file(loaded.path(ca));
        }
        match (&t.cert_file, &t.key_file) {
            (Some(c), Some(key)) => tls = tls.client_certificate(loaded.path(c), loaded.path(key)),
            (None, None) => {}
            _ => bail!("[kafka.tls]: cert_file and key_file go together"),
        }
        if let Some(p) = &t.key_password_file {
            tls = tls.client_key_password(Secret::from_file(loaded.path(p)));
        }
        config = config.tls(tls);
    }
    if let Some(sasl) = &k.sasl {
        let missing = |what: &str| anyhow::anyhow!("[kafka.sasl] mechanism = {:?} needs {what}", sasl.mechanism);
        let mechanism = sasl.mechanism.to_ascii_uppercase();
        let sasl = if mechanism == "OAUTHBEARER" {
            let endpoint = sasl.oauth_token_endpoint.clone().ok_or_else(|| missing("oauth_token_endpoint"))?;
            let client = sasl.oauth_client_id.clone().ok_or_else(|| missing("oauth_client_id"))?;
            let secret =
                secret(loaded, "oauth_client_secret", &sasl.oauth_client_secret, &sasl.oauth_client_secret_file)?
                    .ok_or_else(|| missing("oauth_client_secret_file"))?;
            let oidc = Sasl::oauthbearer_oidc(endpoint, client, secret);
            match &sasl.oauth_scope {
                Some(scope) => oidc.scope(scope.clone()),
                None => oidc,
            }
        } else {
            let user = sasl.username.clone().ok_or_else(|| missing("username"))?;
            let password = secret(loaded, "password", &sasl.password, &sasl.password_file)?
                .ok_or_else(|| missing("password_file"))?;
            match mechanism.as_str() {
                "PLAIN" => Sasl::plain(user, password),
                "SCRAM-SHA-256" => Sasl::scram_sha256(user, password),
                "SCRAM-SHA-512" => Sasl::scram_sha512(user, password),
                other => bail!(
                    "[kafka.sasl] mechanism = {other:?}: expected PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER"
                ),
            }
        };
        config = config.sasl(sasl);
    }
    for (key, value) in &k.options {
        config = config.option(key.clone(), value.clone());
    }
    // The runtime refuses options it relies on, and secrets it cannot read, here.
    config.to_librdkafka().context("[kafka]")?;
    Ok(config)
}

fn registry_config(loaded: &Loaded, r: &crate::settings::SchemaRegistry) -> anyhow::Result<RegistryConfig> {
    if r.url.is_empty() {
        bail!("[schema_registry]: url is required");
    }
    let mut config = RegistryConfig::new(r.url.clone());
    config = match r.mode.as_deref() {
        None | Some("auto_register") => config.mode(RegistryMode::AutoRegister),
        Some("lookup_only") => config.mode(RegistryMode::LookupOnly),
        Some("use_latest") => config.mode(RegistryMode::UseLatest),
        Some(other) => bail!("[schema_registry] mode = {other:?}: expected auto_register, lookup_only or use_latest"),
    };
    let password = secret(loaded, "password", &r.password, &r.password_file)?;
    let token = secret(loaded, "bearer_token", &r.bearer_token, &r.bearer_token_file)?;
    config = match (&r.username, password, token) {
        (Some(user), Some(password), None) => config.basic_auth(user.clone(), password),
        (None, None, Some(token)) => config.bearer_token(token),
        (None, None, None) => config,
        _ => bail!("[schema_registry]: give username with password(_file), or bearer_token(_file), not both"),
    };
    if let Some(ca) = &r.ca_file {
        config = config.ca_file(loaded.path(ca));
    }
    Ok(config)
}

fn jwt_config(loaded: &Loaded, j: &crate::settings::Jwt) -> anyhow::Result<JwtConfig> {
    let mut config = JwtConfig::new();
    if let Some(iss) = &j.issuer {
        config = config.issuer(iss.clone());
    }
    match (&j.audience, j.skip_audience_check) {
        (Some(aud), false) => config = config.audience(aud.clone()),
        (None, true) => config = config.skip_audience_check(),
        (Some(_), true) => bail!("[auth.jwt]: audience and skip_audience_check contradict each other"),
        (None, false) => bail!(
            "[auth.jwt]: audience is required (tokens for other services must not open sessions here); \
             skip_audience_check = true only when this gateway is the issuer's only audience"
        ),
    }
    config = config.leeway(j.leeway);
    if let Some(claim) = &j.subject_claim {
        config = config.subject_claim(claim.clone());
    }
    for (i, key) in j.keys.iter().enumerate() {
        let at = format!("[auth.jwt] keys[{i}]");
        config = match (&key.pem_file, &key.algorithm, &key.jwk_file) {
            (Some(pem), Some(alg), None) => {
                let alg = JwtAlgorithm::from_str(alg).map_err(|e| anyhow::anyhow!("{at}: {e}"))?;
                config.key_pem_file(loaded.path(pem), alg)
            }
            (Some(_), None, None) => bail!("{at}: a pem_file needs its algorithm"),
            (None, None, Some(jwk)) => config.key_jwk_file(loaded.path(jwk)),
            _ => bail!("{at}: give pem_file with algorithm, or jwk_file"),
        };
        if let Some(kid) = &key.kid {
            config = config.key_id(kid.clone());
        }
    }
    if let Some(url) = &j.jwks_url {
        config = config.jwks_url(url.clone());
    }
    if j.allow_http_jwks {
        config = config.allow_http_jwks();
    }
    if j.keys.is_empty() && j.jwks_url.is_none() {
        bail!("[auth.jwt]: no keys: give keys = [...] or jwks_url");
    }
    Ok(config)
}

fn permissions(p: &crate::settings::PermissionRules) -> anyhow::Result<Permissions> {
    let mut out = Permissions::none();
    for g in &p.grant {
        if g.streams.is_empty() {
            bail!("[permissions] grant: streams is required");
        }
        if g.operations.is_empty() {
            out = out.grant_all_operations(g.streams.clone());
        }
        for op in &g.operations {
            let op = match op.as_str() {
                "subscribe" => Operation::Subscribe,
                "publish" => Operation::Publish,
                other => bail!("[permissions] grant operations: {other:?} is not subscribe or publish"),
            };
            out = out.grant(op, g.streams.clone());
        }
    }
    for claim in &p.grant_from_claims {
        out = out.grant_from_claim(claim.clone());
    }
    for pin in &p.pin_keys {
        if pin.streams.is_empty() || pin.claim.is_empty() {
            bail!("[permissions] pin_keys: streams and claim are required");
        }
        out = out.pin_keys(pin.streams.clone(), pin.claim.clone());
    }
    Ok(out)
}
