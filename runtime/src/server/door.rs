//! The checks at the door, before a WebSocket upgrade: the page's `Origin`, the `Host`
//! (against DNS rebinding), and who the client is behind trusted proxies.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::{GatewayConfig, OriginPolicy};
use crate::error::Error;

/// The origin and host rules and trusted proxies of one gateway, parsed once at bind.
#[derive(Debug)]
pub(crate) struct Door {
    origins: Vec<String>,
    any_origin: bool,
    refuse_missing: bool,
    hosts: Vec<String>,
    proxies: Vec<IpNet>,
}

/// Why a request was refused at the door (sent as the 403 body).
pub(crate) type Refusal = String;

impl Door {
    pub(crate) fn new(config: &GatewayConfig) -> Result<Door, Error> {
        let OriginPolicy { allowed, any, refuse_missing, hosts } = &config.origins;
        let origins = allowed.iter().map(|o| canonical_origin(o)).collect::<Result<Vec<_>, _>>()?;
        let proxies = config
            .trusted_proxies
            .iter()
            .map(|p| {
                let p = p.trim();
                p.parse::<IpNet>()
                    .or_else(|_| p.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| Error::Config(format!("trusted proxy {p:?} is not an address or CIDR block")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Door { origins, any_origin: *any, refuse_missing: *refuse_missing, hosts: hosts.clone(), proxies })
    }

    /// Says at start what is open on purpose.
    pub(crate) fn log(&self) {
        if self.any_origin {
            tracing::warn!("pages of ANY origin may open sessions (OriginPolicy::allow_any)");
        } else if self.origins.is_empty() {
            tracing::info!("no browser origin is allowed: browsers are refused (OriginPolicy::allow)");
        } else {
            tracing::info!(origins = ?self.origins, "browser origins allowed");
        }
        if !self.proxies.is_empty() {
            tracing::info!(proxies = ?self.proxies, "X-Forwarded-For believed from these proxies");
        }
    }

    /// Whether a page of `origin` (the header's value; `None` when absent) may connect.
    pub(crate) fn check_origin(&self, origin: Option<&str>) -> Result<(), Refusal> {
        match origin {
            None if self.refuse_missing => Err("an Origin header is required".into()),
            None => Ok(()),
            Some(_) if self.any_origin => Ok(()),
            Some(o) if self.origins.iter().any(|a| a == o) => Ok(()),
            Some(o) => Err(format!("pages of origin {:?} may not connect", truncate(o))),
        }
    }

    /// Whether the `Host` header is one this gateway answers to.
    pub(crate) fn check_host(&self, host: Option<&str>) -> Result<(), Refusal> {
        if self.hosts.is_empty() {
            return Ok(());
        }
        match host {
            Some(h) if self.hosts.iter().any(|a| a.eq_ignore_ascii_case(h)) => Ok(()),
            Some(h) => Err(format!("host {:?} is not served here", truncate(h))),
            None => Err("a Host header is required".into()),
        }
    }

    /// The client's address: the peer's, or behind trusted proxies the rightmost address
    /// of `X-Forwarded-For` that is not a trusted proxy itself.
    pub(crate) fn client_ip<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        if !self.trusted(peer) {
            return peer;
        }
        let hops: Vec<&str> = forwarded_for.flat_map(|v| v.split(',')).map(str::trim).collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            match hop.parse::<IpAddr>() {
                Ok(ip) => {
                    client = ip;
                    if !self.trusted(ip) {
                        break;
                    }
                }
                // An unparsable hop: trust nothing further left.
                Err(_) => break,
            }
        }
        client
    }

    /// Whether `ip` is one of the trusted proxies.
    pub(crate) fn trusted(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        self.proxies.iter().any(|n| n.contains(&ip))
    }
}

/// The form a browser sends: `scheme://host[:port]`, lower case, punycode, no default port.
fn canonical_origin(configured: &str) -> Result<String, Error> {
    let bad = |why: &str| Error::Config(format!("allowed origin {configured:?}: {why}"));
    if configured.trim() == "null" {
        return Err(bad("`null` is the origin of sandboxed and file pages; it cannot be allowed"));
    }
    let url = url::Url::parse(configured.trim()).map_err(|e| bad(&e.to_string()))?;
    if !url.username().is_empty() || url.password().is_some() || url.query().is_some() || url.fragment().is_some() {
        return Err(bad("an origin is scheme://host[:port], nothing else"));
    }
    if !matches!(url.path(), "" | "/") {
        return Err(bad("an origin has no path"));
    }
    match url.origin() {
        url::Origin::Tuple(..) => Ok(url.origin().ascii_serialization()),
        url::Origin::Opaque(_) => Err(bad("not an origin a browser sends (use http:// or https://)")),
    }
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(100) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::config::KafkaConfig;

    fn door(policy: OriginPolicy, proxies: &[&str]) -> Door {
        let config =
            GatewayConfig::new(KafkaConfig::new("x:1")).origins(policy).trusted_proxies(proxies.iter().copied());
        Door::new(&config).expect("door")
    }

    #[test]
    fn configured_origins_are_normalized_and_bad_ones_refused() {
        let d =
            door(OriginPolicy::new().allow("https://Chat.Example.com:443").allow("http://bücher.example:8080/"), &[]);
        assert!(d.check_origin(Some("https://chat.example.com")).is_ok());
        assert!(d.check_origin(Some("http://xn--bcher-kva.example:8080")).is_ok());
        assert!(d.check_origin(Some("https://chat.example.com:443")).is_err(), "browsers omit default ports");
        assert!(d.check_origin(Some("HTTPS://CHAT.EXAMPLE.COM")).is_err(), "not the form browsers send");
        assert!(d.check_origin(None).is_ok());
        for bad in
            ["null", "https://a.example/path", "https://u@a.example", "file:///x", "nonsense", "https://a.example?q"]
        {
            let config = GatewayConfig::new(KafkaConfig::new("x:1")).origins(OriginPolicy::new().allow(bad));
            assert!(Door::new(&config).is_err(), "{bad}");
        }
        assert!(door(OriginPolicy::new().refuse_missing(), &[]).check_origin(None).is_err());
        assert!(door(OriginPolicy::new().allow_any(), &[]).check_origin(Some("null")).is_ok());
    }

    #[test]
    fn hosts_are_checked_only_when_configured() {
        let d = door(OriginPolicy::new().allow_host("gw.example.com").allow_host("gw.example.com:8443"), &[]);
        assert!(d.check_host(Some("GW.example.com")).is_ok());
        assert!(d.check_host(Some("gw.example.com:8443")).is_ok());
        assert!(d.check_host(Some("attacker.example")).is_err());
        assert!(d.check_host(None).is_err());
        assert!(door(OriginPolicy::new(), &[]).check_host(Some("anything")).is_ok());
    }

    #[test]
    fn forwarded_addresses_only_from_trusted_proxies() {
        let d = door(OriginPolicy::new(), &["10.0.0.0/8", "127.0.0.1"]);
        let ip = |s: &str| s.parse::<IpAddr>().expect("ip");
        // An untrusted peer's header is ignored.
        assert_eq!(d.client_ip(ip("203.0.113.9"), ["1.2.3.4"].into_iter()), ip("203.0.113.9"));
        // The rightmost untrusted hop is the client; spoofed hops left of it are ignored.
        assert_eq!(d.client_ip(ip("10.1.1.1"), ["6.6.6.6, 198.51.100.7, 10.2.2.2"].into_iter()), ip("198.51.100.7"));
        assert_eq!(d.client_ip(ip("127.0.0.1"), ["garbage, 198.51.100.7"].into_iter()), ip("198.51.100.7"));
        assert_eq!(d.client_ip(ip("::ffff:127.0.0.1"), std::iter::empty()), ip("::ffff:127.0.0.1"));
        assert!(Door::new(&GatewayConfig::new(KafkaConfig::new("x:1")).trusted_proxies(["nope"])).is_err());
    }
}
