//! The operator's outbound endpoint policy (docs/behaviour.md §8).
//!
//! - Authority and Graph endpoints must be `https` and on an allowlist: Microsoft's clouds by
//!   default, plus `--allowed-authority-hosts` / `--allowed-graph-hosts` (`host` or
//!   `host:port`; a bare host matches any port, a default cloud host only its default port).
//! - The SCIM endpoint may not reach a link-local or metadata address, nor a `--denied-cidrs`
//!   range — ever; nor a loopback, private, shared (CGNAT) or unique-local address unless
//!   `--allowed-private-cidrs` lists it. Host names are checked at every connect by
//!   [`PolicyResolver`] (the HTTP client's resolver seam), so DNS rebinding gets no further than
//!   the first answer; IP literals are never resolved by the HTTP client, so
//!   [`EndpointPolicy::check_scim_url`] checks those before a client is built.
//!
//! The standalone CLI does not use this module: it acts for the person running it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;

use url::{Host, Url};

use crate::clients::outbound::EndpointRefused;

/// Authority hosts of Microsoft's clouds, allowed by default.
pub const DEFAULT_AUTHORITY_HOSTS: &[&str] = &[
    "login.microsoftonline.com",
    "login.microsoftonline.us",
    "login.chinacloudapi.cn",
    "login.partner.microsoftonline.cn",
];

/// Graph hosts of Microsoft's clouds, allowed by default.
pub const DEFAULT_GRAPH_HOSTS: &[&str] = &[
    "graph.microsoft.com",
    "graph.microsoft.us",
    "dod-graph.microsoft.us",
    "microsoftgraph.chinacloudapi.cn",
];

/// Link-local and cloud metadata ranges: never reachable, whatever the flags say.
pub const ALWAYS_DENIED: &[&str] = &[
    "0.0.0.0/8",          // "this network"; 0.0.0.0 reaches the local host on Linux
    "169.254.0.0/16",     // IPv4 link-local: AWS/Azure/GCP/OCI metadata at 169.254.169.254
    "100.100.100.200/32", // Alibaba Cloud metadata
    "192.0.0.192/32",     // Oracle Cloud classic metadata
    "224.0.0.0/4",        // multicast
    "240.0.0.0/4",        // reserved, broadcast
    "::/128",             // unspecified
    "fe80::/10",          // IPv6 link-local
    "fd00:ec2::254/128",  // AWS metadata (IPv6)
    "ff00::/8",           // multicast
];

/// Loopback and private ranges: refused unless `--allowed-private-cidrs` lists them.
pub const PRIVATE: &[&str] = &[
    "127.0.0.0/8",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10", // shared address space (carrier-grade NAT, some cluster networks)
    "198.18.0.0/15", // benchmarking
    "::1/128",
    "fc00::/7", // unique local
];

/// An IP range, `addr/prefix` (a bare address is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` lies in the range. IPv4 ranges never match IPv6 addresses and the other
    /// way round (callers normalise IPv4-mapped addresses first, see [`canonical`]).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{s:?} is not an IP range (like 10.0.0.0/8 or fd00::/8)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{s:?}: the prefix length must be 0..={max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// An allowlist entry: a host name or IP, with an optional port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostRule {
    host: String,
    port: Option<u16>,
}

impl FromStr for HostRule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let bad = || format!("{s:?} is not a host or host:port");
        if t.is_empty() || t.contains(['/', '@', '?', '#']) || t.contains(char::is_whitespace) {
            return Err(bad());
        }
        // Parse as the authority of a URL so that "[::1]:8443" and "host:443" work alike.
        let u = Url::parse(&format!("https://{t}/")).map_err(|_| bad())?;
        let host = match u.host() {
            Some(Host::Domain(d)) => d.trim_end_matches('.').to_string(),
            Some(Host::Ipv4(a)) => a.to_string(),
            Some(Host::Ipv6(a)) => a.to_string(),
            None => return Err(bad()),
        };
        // `Url` drops a port equal to the scheme's default; keep an explicit ":443".
        let port = u.port().or_else(|| t.ends_with(":443").then_some(443));
        Ok(HostRule { host, port })
    }
}

/// The host of a URL in the form the allowlists compare (lower case, IPv6 without brackets,
/// no trailing dot).
fn url_host(url: &Url) -> Option<String> {
    Some(match url.host()? {
        Host::Domain(d) => d.to_ascii_lowercase().trim_end_matches('.').to_string(),
        Host::Ipv4(a) => a.to_string(),
        Host::Ipv6(a) => a.to_string(),
    })
}

/// An IPv4-mapped or IPv4-compatible-looking IPv6 address as the IPv4 address it reaches.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

fn parse_all(list: &[&str]) -> Vec<Cidr> {
    list.iter().filter_map(|s| s.parse().ok()).collect()
}

/// The policy, built once from the operator's flags.
#[derive(Clone, Debug)]
pub struct EndpointPolicy {
    authority_hosts: Vec<HostRule>,
    graph_hosts: Vec<HostRule>,
    denied: Vec<Cidr>,
    always_denied: Vec<Cidr>,
    private: Vec<Cidr>,
    allowed_private: Vec<Cidr>,
}

impl Default for EndpointPolicy {
    fn default() -> Self {
        Self {
            authority_hosts: Vec::new(),
            graph_hosts: Vec::new(),
            denied: Vec::new(),
            always_denied: parse_all(ALWAYS_DENIED),
            private: parse_all(PRIVATE),
            allowed_private: Vec::new(),
        }
    }
}

impl EndpointPolicy {
    /// Builds the policy from the flags' values; an entry that does not parse is an error
    /// (the operator refuses to start rather than run with a policy nobody wrote).
    pub fn from_flags(
        authority_hosts: &[String],
        graph_hosts: &[String],
        denied_cidrs: &[String],
        allowed_private_cidrs: &[String],
    ) -> Result<Self, String> {
        let hosts = |flag: &str, v: &[String]| -> Result<Vec<HostRule>, String> {
            v.iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.parse().map_err(|e| format!("{flag}: {e}")))
                .collect()
        };
        let cidrs = |flag: &str, v: &[String]| -> Result<Vec<Cidr>, String> {
            v.iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| s.parse().map_err(|e| format!("{flag}: {e}")))
                .collect()
        };
        Ok(Self {
            authority_hosts: hosts("--allowed-authority-hosts", authority_hosts)?,
            graph_hosts: hosts("--allowed-graph-hosts", graph_hosts)?,
            denied: cidrs("--denied-cidrs", denied_cidrs)?,
            allowed_private: cidrs("--allowed-private-cidrs", allowed_private_cidrs)?,
            ..Self::default()
        })
    }

    fn on_list(url: &Url, defaults: &[&str], extra: &[HostRule]) -> bool {
        let Some(host) = url_host(url) else {
            return false;
        };
        // `port()` is None for the scheme's default port.
        if url.port().is_none() && defaults.contains(&host.as_str()) {
            return true;
        }
        let port = url.port_or_known_default();
        extra
            .iter()
            .any(|r| r.host == host && (r.port.is_none() || r.port == port))
    }

    fn check_listed(
        &self,
        what: &str,
        flag: &str,
        url: &Url,
        defaults: &[&str],
        extra: &[HostRule],
    ) -> Result<(), String> {
        if url.scheme() != "https" {
            return Err(format!("the {what} must use https"));
        }
        if !Self::on_list(url, defaults, extra) {
            let host = url_host(url).unwrap_or_default();
            let shown = match url.port() {
                Some(p) => format!("{host}:{p}"),
                None => host,
            };
            return Err(format!(
                "the {what} {shown} is not on the allowlist (Microsoft's clouds and {flag})"
            ));
        }
        Ok(())
    }

    /// `spec.source.entraID.authorityHost`.
    pub fn check_authority(&self, url: &Url) -> Result<(), String> {
        self.check_listed(
            "authority host",
            "--allowed-authority-hosts",
            url,
            DEFAULT_AUTHORITY_HOSTS,
            &self.authority_hosts,
        )
    }

    /// `spec.source.entraID.graphEndpoint`.
    pub fn check_graph(&self, url: &Url) -> Result<(), String> {
        self.check_listed(
            "Graph endpoint",
            "--allowed-graph-hosts",
            url,
            DEFAULT_GRAPH_HOSTS,
            &self.graph_hosts,
        )
    }

    /// Whether the SCIM endpoint may connect to `ip`; the error says why not.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), String> {
        let ip = canonical(ip);
        if let Some(c) = self.always_denied.iter().find(|c| c.contains(ip)) {
            return Err(format!(
                "{ip} is a link-local, metadata or reserved address ({c}), never allowed"
            ));
        }
        if let Some(c) = self.denied.iter().find(|c| c.contains(ip)) {
            return Err(format!("{ip} is in a denied range ({c}, --denied-cidrs)"));
        }
        if let Some(c) = self.private.iter().find(|c| c.contains(ip))
            && !self.allowed_private.iter().any(|a| a.contains(ip))
        {
            return Err(format!(
                "{ip} is a loopback or private address ({c}) not listed in --allowed-private-cidrs"
            ));
        }
        Ok(())
    }

    /// The SCIM endpoint's URL: an IP-literal host is checked now (the HTTP client connects
    /// to it without resolving); a host name is checked at every connect by the resolver.
    pub fn check_scim_url(&self, url: &Url) -> Result<(), String> {
        match url.host() {
            None => Err("the SCIM endpoint has no host".into()),
            Some(Host::Ipv4(a)) => self
                .check_ip(IpAddr::V4(a))
                .map_err(|e| format!("the SCIM endpoint is not allowed: {e}")),
            Some(Host::Ipv6(a)) => self
                .check_ip(IpAddr::V6(a))
                .map_err(|e| format!("the SCIM endpoint is not allowed: {e}")),
            Some(Host::Domain(_)) => Ok(()),
        }
    }

    /// The resolver that applies [`EndpointPolicy::check_ip`] to every answer.
    pub fn resolver(self: &Arc<Self>) -> Arc<dyn reqwest::dns::Resolve> {
        Arc::new(PolicyResolver {
            policy: self.clone(),
        })
    }
}

/// Resolves with the system resolver, then refuses the whole answer when any address in it
/// is not allowed (a mixed answer is a misconfiguration or a rebinding attempt). Runs at every
/// new connection.
pub struct PolicyResolver {
    policy: Arc<EndpointPolicy>,
}

impl reqwest::dns::Resolve for PolicyResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let policy = self.policy.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?
                .collect();
            for a in &addrs {
                if let Err(why) = policy.check_ip(a.ip()) {
                    let host = crate::clients::outbound::cut(&host);
                    return Err(Box::new(EndpointRefused(format!(
                        "the SCIM endpoint's host {host} resolves to {why}"
                    )))
                        as Box<dyn std::error::Error + Send + Sync>);
                }
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Used by the docs and tests: the addresses behind the names of a few well-known metadata
/// services, all inside [`ALWAYS_DENIED`].
pub const METADATA_ADDRESSES: &[IpAddr] = &[
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
];

#[cfg(test)]
mod tests {
    use super::*;

    fn url(s: &str) -> Url {
        Url::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn policy(auth: &[&str], graph: &[&str], denied: &[&str], private: &[&str]) -> EndpointPolicy {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        EndpointPolicy::from_flags(&v(auth), &v(graph), &v(denied), &v(private)).expect("flags")
    }

    #[test]
    fn cidr_matching() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(
            !c.contains(ip("::ffff:10.0.0.1")),
            "callers canonicalise first"
        );
        let c: Cidr = "172.16.0.0/12".parse().unwrap();
        assert!(c.contains(ip("172.31.255.255")));
        assert!(!c.contains(ip("172.32.0.0")));
        let c: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(c.contains(ip("8.8.8.8")));
        assert!(!c.contains(ip("::1")));
        let c: Cidr = "fe80::/10".parse().unwrap();
        assert!(c.contains(ip("fe80::1")));
        assert!(c.contains(ip("febf::1")));
        assert!(!c.contains(ip("fec0::1")));
        let c: Cidr = "192.0.2.7".parse().unwrap();
        assert_eq!(c.to_string(), "192.0.2.7/32");
        assert!(c.contains(ip("192.0.2.7")) && !c.contains(ip("192.0.2.8")));
        let c: Cidr = "::/0".parse().unwrap();
        assert!(c.contains(ip("2001:db8::1")));
        for bad in [
            "10.0.0.0/33",
            "::/129",
            "10.0.0/8",
            "example.com",
            "10.0.0.0/x",
            "",
        ] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn microsoft_clouds_are_allowed_by_default_and_nothing_else() {
        let p = EndpointPolicy::default();
        for a in [
            "https://login.microsoftonline.com",
            "https://login.microsoftonline.us/",
            "https://login.chinacloudapi.cn",
            "https://LOGIN.microsoftonline.com:443",
        ] {
            assert!(p.check_authority(&url(a)).is_ok(), "{a}");
        }
        for g in [
            "https://graph.microsoft.com",
            "https://graph.microsoft.us",
            "https://dod-graph.microsoft.us",
            "https://microsoftgraph.chinacloudapi.cn/",
        ] {
            assert!(p.check_graph(&url(g)).is_ok(), "{g}");
        }
        // Lists are not interchangeable.
        assert!(
            p.check_authority(&url("https://graph.microsoft.com"))
                .is_err()
        );
        assert!(
            p.check_graph(&url("https://login.microsoftonline.com"))
                .is_err()
        );
        // https only; another port is another endpoint; look-alikes fail.
        let e = p
            .check_authority(&url("http://login.microsoftonline.com"))
            .unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(
            p.check_authority(&url("https://login.microsoftonline.com:444"))
                .is_err()
        );
        assert!(
            p.check_authority(&url("https://login.microsoftonline.com.evil.example"))
                .is_err()
        );
        assert!(
            p.check_graph(&url("https://evilgraph.microsoft.com"))
                .is_err()
        );
        let e = p
            .check_authority(&url("https://127.0.0.1:8443"))
            .unwrap_err();
        assert!(
            e.contains("127.0.0.1:8443") && e.contains("--allowed-authority-hosts"),
            "{e}"
        );
    }

    #[test]
    fn extra_hosts_match_host_or_host_and_port() {
        let p = policy(
            &["127.0.0.1", "emu.local:9443", "[::1]:8443"],
            &["graph.corp.example:443"],
            &[],
            &[],
        );
        assert!(p.check_authority(&url("https://127.0.0.1:8443")).is_ok());
        assert!(p.check_authority(&url("https://127.0.0.1")).is_ok());
        assert!(p.check_authority(&url("https://EMU.local:9443/")).is_ok());
        assert!(p.check_authority(&url("https://emu.local:9444")).is_err());
        assert!(p.check_authority(&url("https://emu.local")).is_err());
        assert!(p.check_authority(&url("https://[::1]:8443")).is_ok());
        assert!(p.check_authority(&url("https://[::1]:8444")).is_err());
        // The authority list does not open the Graph side.
        assert!(p.check_graph(&url("https://127.0.0.1:8443")).is_err());
        assert!(p.check_graph(&url("https://graph.corp.example")).is_ok());
        assert!(
            p.check_graph(&url("https://graph.corp.example:8443"))
                .is_err()
        );
        assert!(
            p.check_graph(&url("http://graph.corp.example:443"))
                .is_err()
        );
        for bad in ["https://x", "a b", "user@host", "host:99999", ""] {
            let r = EndpointPolicy::from_flags(&[bad.to_string()], &[], &[], &[]);
            assert!(bad.is_empty() || r.is_err(), "{bad}");
        }
    }

    #[test]
    fn metadata_and_link_local_are_never_allowed() {
        let p = policy(&[], &[], &[], &["0.0.0.0/0", "::/0"]);
        for a in METADATA_ADDRESSES.iter().copied().chain([
            ip("169.254.1.1"),
            ip("fe80::1"),
            ip("::ffff:169.254.169.254"),
            ip("0.0.0.0"),
            ip("::"),
            ip("224.0.0.1"),
            ip("255.255.255.255"),
        ]) {
            let e = p.check_ip(a).unwrap_err();
            assert!(e.contains("link-local, metadata or reserved"), "{a}: {e}");
        }
        assert!(p.check_ip(ip("203.0.113.10")).is_ok());
        assert!(p.check_ip(ip("127.0.0.1")).is_ok(), "allowed by 0.0.0.0/0");
    }

    #[test]
    fn private_ranges_need_an_explicit_allowance() {
        let p = EndpointPolicy::default();
        for a in [
            "127.0.0.1",
            "127.8.9.10",
            "10.1.2.3",
            "172.20.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd12::1",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
        ] {
            let e = p.check_ip(ip(a)).unwrap_err();
            assert!(e.contains("--allowed-private-cidrs"), "{a}: {e}");
        }
        for a in ["8.8.8.8", "172.32.0.1", "2001:db8::1", "100.128.0.1"] {
            assert!(p.check_ip(ip(a)).is_ok(), "{a}");
        }
        let p = policy(&[], &[], &[], &["127.0.0.0/8", "10.20.0.0/16"]);
        assert!(p.check_ip(ip("127.0.0.1")).is_ok());
        assert!(p.check_ip(ip("::ffff:127.0.0.1")).is_ok());
        assert!(p.check_ip(ip("10.20.3.4")).is_ok());
        assert!(p.check_ip(ip("10.21.3.4")).is_err());
        assert!(
            p.check_ip(ip("::1")).is_err(),
            "IPv6 loopback is another range"
        );
    }

    #[test]
    fn denied_ranges_win_over_allowed_ones() {
        let p = policy(
            &[],
            &[],
            &["203.0.113.0/24", "10.9.0.0/16"],
            &["10.0.0.0/8"],
        );
        let e = p.check_ip(ip("203.0.113.5")).unwrap_err();
        assert!(e.contains("--denied-cidrs"), "{e}");
        assert!(p.check_ip(ip("10.9.1.1")).is_err());
        assert!(p.check_ip(ip("10.8.1.1")).is_ok());
        assert!(EndpointPolicy::from_flags(&[], &[], &["10.0.0.0/40".into()], &[]).is_err());
        assert!(EndpointPolicy::from_flags(&[], &[], &[], &["nope".into()]).is_err());
    }

    #[test]
    fn ip_literal_scim_endpoints_are_checked_up_front() {
        let p = EndpointPolicy::default();
        assert!(
            p.check_scim_url(&url("https://169.254.169.254/latest/meta-data"))
                .is_err()
        );
        assert!(
            p.check_scim_url(&url("http://127.0.0.1:8080/scim/v2"))
                .is_err()
        );
        assert!(p.check_scim_url(&url("https://[fd00:ec2::254]/")).is_err());
        assert!(
            p.check_scim_url(&url("https://[::ffff:a9fe:a9fe]/"))
                .is_err(),
            "mapped 169.254.169.254"
        );
        assert!(p.check_scim_url(&url("https://203.0.113.9/scim")).is_ok());
        // Names are the resolver's job.
        assert!(p.check_scim_url(&url("https://localhost/scim")).is_ok());
        let p = policy(&[], &[], &[], &["127.0.0.0/8"]);
        assert!(
            p.check_scim_url(&url("http://127.0.0.1:8080/scim/v2"))
                .is_ok()
        );
    }

    #[tokio::test]
    async fn the_resolver_refuses_names_that_resolve_to_forbidden_addresses() {
        let p = Arc::new(EndpointPolicy::default());
        let r = p.resolver();
        let name = reqwest::dns::Name::from_str("localhost").expect("name");
        let err = match r.resolve(name).await {
            Ok(_) => panic!("localhost must be refused"),
            Err(e) => e,
        };
        let refused = err
            .downcast_ref::<EndpointRefused>()
            .expect("an EndpointRefused");
        assert!(
            refused.0.contains("localhost") && refused.0.contains("--allowed-private-cidrs"),
            "{}",
            refused.0
        );
        let p = Arc::new(policy(&[], &[], &[], &["127.0.0.0/8", "::1/128"]));
        let name = reqwest::dns::Name::from_str("localhost").expect("name");
        let addrs: Vec<_> = match p.resolver().resolve(name).await {
            Ok(a) => a.collect(),
            Err(e) => panic!("allowed: {e}"),
        };
        assert!(!addrs.is_empty());
    }
}
