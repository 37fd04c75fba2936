//! The egress decision as pure functions: host normalization, grant matching, the always-on
//! deny set and the private ranges. No I/O; the proxy resolves names and asks
//! [`EgressPolicy::decide`] about every address it would connect to.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use berth_api::EgressRule;
use ipnet::IpNet;

/// A host name or target that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{input:?} is not a valid {what}: {reason}")]
pub struct TargetError {
    /// What was given.
    pub input: String,
    /// What it should have been (`host name`, `CONNECT target`, …).
    pub what: &'static str,
    /// Why it is not.
    pub reason: &'static str,
}

fn host_error(input: &str, reason: &'static str) -> TargetError {
    TargetError {
        input: input.to_owned(),
        what: "host name",
        reason,
    }
}

/// The one form host names are compared in: ASCII (IDNA, so `bücher.example` is
/// `xn--bcher-kva.example`), lower case, without the trailing dot of a fully qualified name.
pub fn normalize_host(host: &str) -> Result<String, TargetError> {
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    if trimmed.is_empty() {
        return Err(host_error(host, "it is empty"));
    }
    let ascii = idna::domain_to_ascii(trimmed)
        .map_err(|_| host_error(host, "it is not a valid internationalized domain name"))?;
    if ascii.is_empty() || ascii.len() > 253 {
        return Err(host_error(host, "a host name has 1 to 253 characters"));
    }
    for label in ascii.split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(host_error(
                host,
                "each dot-separated label has 1 to 63 characters",
            ));
        }
        if !label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(host_error(
                host,
                "only letters, digits, '-' and '_' may appear in a label",
            ));
        }
    }
    Ok(ascii)
}

/// The host part of a destination: a normalized name or an IP address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetHost {
    /// A DNS name, normalized by [`normalize_host`].
    Name(String),
    /// An IP literal.
    Ip(IpAddr),
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Name(name) => f.write_str(name),
            TargetHost::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            TargetHost::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// Where a plugin wants to go: host and port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The host.
    pub host: TargetHost,
    /// The port (1–65535).
    pub port: u16,
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Target {
    /// Parses an authority, `host:port` or `[v6]:port`; without a port, `default_port` is
    /// used when given (absolute-form `http://host/`), or it is an error (CONNECT).
    pub fn parse_authority(
        authority: &str,
        default_port: Option<u16>,
    ) -> Result<Self, TargetError> {
        let bad = |reason| TargetError {
            input: authority.to_owned(),
            what: "host:port",
            reason,
        };
        if authority.contains(['@', '/', '?', '#']) || authority.contains(char::is_whitespace) {
            return Err(bad("give host:port only, without user, path or spaces"));
        }
        let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
            let (ip, after) = rest
                .split_once(']')
                .ok_or_else(|| bad("an IPv6 address in brackets lacks the closing ']'"))?;
            let ip: Ipv6Addr = ip
                .parse()
                .map_err(|_| bad("not an IPv6 address in brackets"))?;
            let port = match after {
                "" => None,
                _ => Some(
                    after
                        .strip_prefix(':')
                        .ok_or_else(|| bad("expected ':' and a port after ']'"))?,
                ),
            };
            (TargetHost::Ip(IpAddr::V6(ip)), port)
        } else {
            let (host, port) = match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            };
            if host.contains(':') {
                return Err(bad(
                    "an IPv6 address must be written in brackets: [::1]:443",
                ));
            }
            (parse_host(host)?, port)
        };
        let port = match port {
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => return Err(bad("the port must be a number from 1 to 65535")),
                Ok(p) => p,
            },
            None => default_port.ok_or_else(|| bad("a port is required: host:port"))?,
        };
        Ok(Self { host, port })
    }
}

/// A host as a name or an IP literal. Normalization comes first, so an IDNA form that maps
/// to digits (full-width `１２７.０.０.１`) is recognized as the IP literal it becomes.
fn parse_host(host: &str) -> Result<TargetHost, TargetError> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(TargetHost::Ip(ip));
    }
    let name = normalize_host(host)?;
    Ok(match name.parse::<IpAddr>() {
        Ok(ip) => TargetHost::Ip(ip),
        Err(_) => TargetHost::Name(name),
    })
}

/// The host part of a granted rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HostPattern {
    /// `*`: any host, names and IP literals alike.
    Any,
    /// One name.
    Exact(String),
    /// `*.example.com`, stored as `.example.com`: any name below it, not the name itself.
    Subdomains(String),
}

impl HostPattern {
    /// Parses `*`, `*.example.com` or `api.example.com`, normalizing the name.
    pub fn parse(pattern: &str) -> Result<Self, TargetError> {
        if pattern == "*" {
            return Ok(HostPattern::Any);
        }
        if let Some(domain) = pattern.strip_prefix("*.") {
            return Ok(HostPattern::Subdomains(format!(
                ".{}",
                normalize_host(domain)?
            )));
        }
        Ok(HostPattern::Exact(normalize_host(pattern)?))
    }

    /// True when `host` is covered.
    pub fn matches(&self, host: &TargetHost) -> bool {
        match (self, host) {
            (HostPattern::Any, _) => true,
            (HostPattern::Exact(want), TargetHost::Name(name)) => want == name,
            // A normalized name never starts with '.', so the suffix leaves a label before it.
            (HostPattern::Subdomains(suffix), TargetHost::Name(name)) => {
                name.ends_with(suffix.as_str())
            }
            (_, TargetHost::Ip(_)) => false,
        }
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostPattern::Any => f.write_str("*"),
            HostPattern::Exact(name) => f.write_str(name),
            HostPattern::Subdomains(suffix) => write!(f, "*{suffix}"),
        }
    }
}

/// Why an address is in the deny set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DenyCategory {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// The cloud metadata service, 169.254.169.254.
    CloudMetadata,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// 0.0.0.0/8, ::.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255 and the rest of 240.0.0.0/4.
    Reserved,
    /// An address of this machine's own interfaces.
    HostAddress,
    /// A Berth network (`--egress-deny`): plugin networks, pods, services.
    BerthNetwork,
    /// A network of one of the gateway's own interfaces that holds a plugin: another
    /// plugin's network in local mode.
    PluginNetwork,
}

impl DenyCategory {
    /// Short text for messages and audit: `loopback`, `cloud metadata`, …
    pub fn as_str(self) -> &'static str {
        match self {
            DenyCategory::Loopback => "loopback",
            DenyCategory::CloudMetadata => "cloud metadata",
            DenyCategory::LinkLocal => "link-local",
            DenyCategory::Unspecified => "unspecified",
            DenyCategory::Multicast => "multicast",
            DenyCategory::Reserved => "broadcast/reserved",
            DenyCategory::HostAddress => "an address of the gateway's own host",
            DenyCategory::BerthNetwork => "a Berth network (--egress-deny)",
            DenyCategory::PluginNetwork => "a plugin network the gateway is attached to",
        }
    }
}

/// Addresses no grant can open, whatever name resolves to them.
#[derive(Clone, Debug, Default)]
pub struct DenySet {
    entries: Vec<(IpNet, DenyCategory)>,
}

fn net(text: &str) -> IpNet {
    text.parse().expect("built-in network")
}

impl DenySet {
    /// Nothing denied. Only tests that need loopback upstreams start here; the proxy uses
    /// [`DenySet::always_on`].
    pub fn empty() -> Self {
        Self::default()
    }

    /// The address classes that are never a legitimate egress destination: loopback,
    /// metadata and link-local, unspecified, multicast, broadcast and reserved.
    pub fn builtin() -> Self {
        use DenyCategory::*;
        let entries = [
            ("127.0.0.0/8", Loopback),
            ("::1/128", Loopback),
            ("169.254.169.254/32", CloudMetadata),
            ("169.254.0.0/16", LinkLocal),
            ("fe80::/10", LinkLocal),
            ("0.0.0.0/8", Unspecified),
            ("::/128", Unspecified),
            ("224.0.0.0/4", Multicast),
            ("ff00::/8", Multicast),
            ("240.0.0.0/4", Reserved),
        ];
        Self {
            entries: entries.iter().map(|(n, c)| (net(n), *c)).collect(),
        }
    }

    /// [`DenySet::builtin`], this machine's own addresses and the Berth networks.
    pub fn always_on(
        host_addresses: impl IntoIterator<Item = IpAddr>,
        berth_networks: impl IntoIterator<Item = IpNet>,
    ) -> Self {
        Self::builtin()
            .with_host_addresses(host_addresses)
            .with_networks(berth_networks, DenyCategory::BerthNetwork)
    }

    /// Adds `networks` under `category`.
    pub fn with_networks(
        mut self,
        networks: impl IntoIterator<Item = IpNet>,
        category: DenyCategory,
    ) -> Self {
        self.entries
            .extend(networks.into_iter().map(|n| (n.trunc(), category)));
        self
    }

    /// Adds single addresses of this machine.
    pub fn with_host_addresses(self, addresses: impl IntoIterator<Item = IpAddr>) -> Self {
        let nets = addresses.into_iter().map(|a| IpNet::from(a.to_canonical()));
        self.with_networks(nets, DenyCategory::HostAddress)
    }

    /// The entry that denies `addr`, looking also at the IPv4 address an IPv6 one embeds
    /// (mapped, compatible, NAT64, 6to4), which some stacks and gateways reach.
    pub fn find(&self, addr: IpAddr) -> Option<(IpNet, DenyCategory)> {
        forms(addr).into_iter().flatten().find_map(|form| {
            self.entries
                .iter()
                .find(|(net, _)| net.contains(&form))
                .copied()
        })
    }
}

/// The network of one of the gateway's own interfaces (`interfaces`) that contains
/// `address` and also a plugin's address (`plugin_addresses`): in local mode the gateway
/// joins every plugin network, and with `--egress-allow-private` those private ranges would
/// otherwise be open to any plugin. Networks without a plugin (the edge network, a network
/// an operator connected the gateway to on purpose) are left to the other rules.
pub fn plugin_network(
    interfaces: &[IpNet],
    plugin_addresses: &[IpAddr],
    address: IpAddr,
) -> Option<IpNet> {
    forms(address).into_iter().flatten().find_map(|form| {
        interfaces
            .iter()
            .find(|net| {
                net.contains(&form)
                    && plugin_addresses
                        .iter()
                        .any(|p| net.contains(&p.to_canonical()))
            })
            .map(IpNet::trunc)
    })
}

/// `address` as one of the gateway's own interface addresses (`interfaces` keep the
/// interface's address in their host bits), as a single-address network: addresses gained
/// after start-up (a network joined later) are the gateway's own too.
pub fn own_address(interfaces: &[IpNet], address: IpAddr) -> Option<IpNet> {
    forms(address).into_iter().flatten().find_map(|form| {
        interfaces
            .iter()
            .any(|net| net.addr() == form)
            .then(|| IpNet::from(form))
    })
}

/// `addr` and the IPv4 address it embeds, if any.
fn forms(addr: IpAddr) -> [Option<IpAddr>; 2] {
    let embedded = match addr {
        IpAddr::V4(_) => None,
        IpAddr::V6(v6) => embedded_ipv4(v6).map(IpAddr::V4),
    };
    [Some(addr), embedded]
}

fn embedded_ipv4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = v6.to_ipv4_mapped() {
        return Some(v4);
    }
    let s = v6.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // IPv4-compatible ::a.b.c.d (deprecated, but still parsed by stacks). `::` and `::1`
        // are caught as themselves.
        [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        // NAT64 well-known prefix 64:ff9b::/96.
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        // 6to4 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        [0x2002, a, b, ..] => Some(Ipv4Addr::new(
            (a >> 8) as u8,
            a as u8,
            (b >> 8) as u8,
            b as u8,
        )),
        _ => None,
    }
}

/// The private ranges: refused unless the platform allows them or a CIDR grant names them.
const PRIVATE: &[&str] = &[
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "100.64.0.0/10",
    "fc00::/7",
];

fn private_network(addr: IpAddr) -> Option<IpNet> {
    forms(addr)
        .into_iter()
        .flatten()
        .find_map(|form| PRIVATE.iter().map(|n| net(n)).find(|n| n.contains(&form)))
}

/// Why a destination was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// The address is in the always-on deny set: no grant can open it.
    AlwaysDenied {
        /// The denied address.
        address: IpAddr,
        /// The deny-set entry that contains it.
        network: IpNet,
        /// Why that entry is there.
        category: DenyCategory,
    },
    /// A private address reached through a host rule, without `--egress-allow-private`.
    Private {
        /// The private address.
        address: IpAddr,
        /// The private range that contains it.
        network: IpNet,
        /// The host rule that matched the name.
        rule: String,
    },
    /// No granted rule covers the destination.
    NotGranted {
        /// The address, when the name was resolved (a name no rule could cover is not).
        address: Option<IpAddr>,
        /// Ports granted for this host on other rules, to say "only on 443".
        ports_for_host: Vec<u16>,
    },
}

impl Refusal {
    /// The resolved address the refusal is about, if any.
    pub fn address(&self) -> Option<IpAddr> {
        match self {
            Refusal::AlwaysDenied { address, .. } | Refusal::Private { address, .. } => {
                Some(*address)
            }
            Refusal::NotGranted { address, .. } => *address,
        }
    }

    /// The rule that refused, in words.
    pub fn rule(&self) -> String {
        match self {
            Refusal::AlwaysDenied {
                network, category, ..
            } => format!("always denied: {} ({network})", category.as_str()),
            Refusal::Private { network, rule, .. } => format!(
                "private range {network} reached through host rule {rule}: needs a CIDR grant \
                 naming it, or --egress-allow-private on the gateway"
            ),
            Refusal::NotGranted { ports_for_host, .. } if !ports_for_host.is_empty() => format!(
                "the host is granted only on port{} {}",
                if ports_for_host.len() == 1 { "" } else { "s" },
                join_ports(ports_for_host)
            ),
            Refusal::NotGranted { .. } => "no granted egress rule covers it".to_owned(),
        }
    }

    /// False when no grant can ever open it (the always-on deny set).
    pub fn grantable(&self) -> bool {
        !matches!(self, Refusal::AlwaysDenied { .. })
    }

    /// The `host` label of `berth_egress_requests_total` for this refusal: one of a few
    /// fixed buckets, never the requested name.
    pub fn metric_bucket(&self) -> &'static str {
        match self {
            Refusal::AlwaysDenied { .. } => "denied:always",
            Refusal::Private { .. } => "denied:private",
            Refusal::NotGranted { .. } => "denied:not_granted",
        }
    }

    /// The manifest/grant snippet that would allow `target`, when one can.
    pub fn grant_hint(&self, target: &Target) -> Option<String> {
        let port = target.port;
        match self {
            Refusal::AlwaysDenied { .. } => None,
            Refusal::Private { address, .. } => Some(format!(
                "permissions.network.egress: [{{cidr: {}, ports: [{port}]}}]",
                IpNet::from(*address)
            )),
            Refusal::NotGranted { .. } => Some(match &target.host {
                TargetHost::Name(name) => {
                    format!("permissions.network.egress: [{{host: {name}, ports: [{port}]}}]")
                }
                TargetHost::Ip(ip) => format!(
                    "permissions.network.egress: [{{cidr: {}, ports: [{port}]}}]",
                    IpNet::from(*ip)
                ),
            }),
        }
    }
}

fn join_ports(ports: &[u16]) -> String {
    ports
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// The answer for one destination address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by a granted rule.
    Allowed {
        /// The rule's pattern: `api.example.com`, `*.example.com`, `*` or a CIDR. Also the
        /// `host` label of `berth_egress_requests_total`, so bounded by the grants.
        rule: String,
        /// Where the rule is among the granted rules passed to [`EgressPolicy::decide`]:
        /// the grant item a usage receipt counts.
        index: usize,
    },
    /// Refused.
    Denied(Refusal),
}

/// A granted rule, parsed once per decision; a rule that does not parse matches nothing.
struct ParsedRule {
    index: usize,
    host: Option<HostPattern>,
    cidr: Option<IpNet>,
    ports: Vec<u16>,
}

fn parse_rules(rules: &[EgressRule]) -> Vec<ParsedRule> {
    rules
        .iter()
        .enumerate()
        .filter_map(|(index, r)| {
            let host = match &r.host {
                Some(h) => Some(HostPattern::parse(h).ok()?),
                None => None,
            };
            let cidr = match &r.cidr {
                Some(c) => Some(c.parse::<IpNet>().ok()?.trunc()),
                None => None,
            };
            Some(ParsedRule {
                index,
                host,
                cidr,
                ports: r.ports.clone(),
            })
        })
        .collect()
}

/// The platform's side of the egress decision: the deny set and whether private ranges
/// may be reached through host rules.
#[derive(Clone, Debug)]
pub struct EgressPolicy {
    deny: DenySet,
    allow_private: bool,
}

impl EgressPolicy {
    /// A policy over `deny`; `allow_private` is `--egress-allow-private`.
    pub fn new(deny: DenySet, allow_private: bool) -> Self {
        Self {
            deny,
            allow_private,
        }
    }

    /// The deny set.
    pub fn deny_set(&self) -> &DenySet {
        &self.deny
    }

    /// Before resolving a name: a refusal when no rule can cover `target` whatever it
    /// resolves to, so names nobody granted are not even looked up (no DNS as a side
    /// channel). `None` means: resolve and [`EgressPolicy::decide`] each address.
    pub fn precheck(&self, rules: &[EgressRule], target: &Target) -> Option<Refusal> {
        let parsed = parse_rules(rules);
        let possible = parsed.iter().any(|r| {
            r.ports.contains(&target.port)
                && match (&r.host, &r.cidr) {
                    (Some(h), _) => h.matches(&target.host),
                    (None, Some(_)) => true,
                    (None, None) => false,
                }
        });
        (!possible).then(|| Refusal::NotGranted {
            address: None,
            ports_for_host: ports_for_host(&parsed, &target.host),
        })
    }

    /// May a plugin holding `rules` connect to `address` for `target`? The always-on deny
    /// set wins over every grant; a CIDR grant covering the address allows it (private or
    /// not); a host rule allows a public address, and a private one only with
    /// `--egress-allow-private`.
    pub fn decide(&self, rules: &[EgressRule], target: &Target, address: IpAddr) -> Decision {
        if let Some((network, category)) = self.deny.find(address) {
            return Decision::Denied(Refusal::AlwaysDenied {
                address,
                network,
                category,
            });
        }
        let parsed = parse_rules(rules);
        let canonical = address.to_canonical();
        let on_port = || parsed.iter().filter(|r| r.ports.contains(&target.port));
        if let Some((cidr, index)) = on_port()
            .filter(|r| r.host.is_none())
            .filter_map(|r| Some((r.cidr?, r.index)))
            .find(|(c, _)| c.contains(&canonical))
        {
            return Decision::Allowed {
                rule: cidr.to_string(),
                index,
            };
        }
        if let Some((pattern, index)) = on_port()
            .filter_map(|r| Some((r.host.as_ref()?, r.index)))
            .find(|(h, _)| h.matches(&target.host))
        {
            return match private_network(address) {
                Some(network) if !self.allow_private => Decision::Denied(Refusal::Private {
                    address,
                    network,
                    rule: pattern.to_string(),
                }),
                _ => Decision::Allowed {
                    rule: pattern.to_string(),
                    index,
                },
            };
        }
        Decision::Denied(Refusal::NotGranted {
            address: Some(address),
            ports_for_host: ports_for_host(&parsed, &target.host),
        })
    }
}

fn ports_for_host(parsed: &[ParsedRule], host: &TargetHost) -> Vec<u16> {
    let mut ports: Vec<u16> = parsed
        .iter()
        .filter(|r| r.host.as_ref().is_some_and(|h| h.matches(host)))
        .flat_map(|r| r.ports.iter().copied())
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str, ports: &[u16]) -> EgressRule {
        EgressRule {
            host: Some(h.into()),
            cidr: None,
            ports: ports.to_vec(),
        }
    }

    fn cidr(c: &str, ports: &[u16]) -> EgressRule {
        EgressRule {
            host: None,
            cidr: Some(c.into()),
            ports: ports.to_vec(),
        }
    }

    fn target(s: &str) -> Target {
        Target::parse_authority(s, None).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn policy() -> EgressPolicy {
        EgressPolicy::new(DenySet::builtin(), false)
    }

    fn allowed(d: &Decision) -> Option<&str> {
        match d {
            Decision::Allowed { rule, .. } => Some(rule),
            Decision::Denied(_) => None,
        }
    }

    #[test]
    fn an_allowed_decision_names_the_granted_rule_it_came_from() {
        let rules = [
            host("not a pattern!", &[443]),
            host("api.example.com", &[80]),
            host("*.example.com", &[443]),
            cidr("10.0.0.0/8", &[443]),
        ];
        assert_eq!(
            policy().decide(&rules, &target("api.example.com:443"), ip("93.184.216.34")),
            Decision::Allowed {
                rule: "*.example.com".into(),
                index: 2,
            }
        );
        assert_eq!(
            policy().decide(&rules, &target("api.example.com:80"), ip("93.184.216.34")),
            Decision::Allowed {
                rule: "api.example.com".into(),
                index: 1,
            }
        );
        assert_eq!(
            policy().decide(&rules, &target("10.1.2.3:443"), ip("10.1.2.3")),
            Decision::Allowed {
                rule: "10.0.0.0/8".into(),
                index: 3,
            }
        );
    }

    #[test]
    fn host_names_are_lowercased_without_trailing_dot() {
        assert_eq!(
            normalize_host("API.Example.COM.").unwrap(),
            "api.example.com"
        );
        assert_eq!(normalize_host("a_b.example").unwrap(), "a_b.example");
        assert!(normalize_host(".").is_err());
        assert!(normalize_host("").is_err());
        assert!(normalize_host("a..b").is_err());
        assert!(normalize_host("example.com..").is_err());
        assert!(normalize_host("exa mple.com").is_err());
        assert!(normalize_host(&format!("{}.com", "a".repeat(64))).is_err());
    }

    #[test]
    fn internationalized_names_become_punycode() {
        assert_eq!(
            normalize_host("Bücher.example").unwrap(),
            "xn--bcher-kva.example"
        );
        assert_eq!(
            normalize_host("xn--bcher-kva.example.").unwrap(),
            "xn--bcher-kva.example"
        );
        let p = HostPattern::parse("*.bücher.example").unwrap();
        assert!(p.matches(&target("api.xn--bcher-kva.example:443").host));
        assert!(p.matches(&target("api.BÜCHER.example.:443").host));
    }

    #[test]
    fn full_width_digits_are_recognized_as_the_ip_literal_they_map_to() {
        assert_eq!(
            target("１２７.０.０.１:80").host,
            TargetHost::Ip(ip("127.0.0.1"))
        );
    }

    #[test]
    fn authorities_parse_with_and_without_default_ports() {
        assert_eq!(
            target("Example.com.:443").host,
            TargetHost::Name("example.com".into())
        );
        assert_eq!(target("[::1]:8443").host, TargetHost::Ip(ip("::1")));
        assert_eq!(target("10.0.0.1:22").port, 22);
        assert_eq!(
            Target::parse_authority("example.com", Some(80))
                .unwrap()
                .port,
            80
        );
        assert_eq!(
            Target::parse_authority("[2001:db8::1]", Some(80))
                .unwrap()
                .host,
            TargetHost::Ip(ip("2001:db8::1"))
        );
        for bad in [
            "example.com",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:http",
            "user@example.com:443",
            "::1:443",
            "[::1",
            "[::1]443",
            "[nope]:443",
            ":443",
            "a b:443",
            "example.com:443/x",
        ] {
            assert!(Target::parse_authority(bad, None).is_err(), "{bad}");
        }
    }

    #[test]
    fn exact_host_rules_match_that_name_and_port_only() {
        let rules = [host("API.example.com.", &[443])];
        let t = target("api.example.com:443");
        assert_eq!(
            allowed(&policy().decide(&rules, &t, ip("93.184.216.34"))),
            Some("api.example.com")
        );
        let other = target("www.example.com:443");
        assert!(allowed(&policy().decide(&rules, &other, ip("93.184.216.34"))).is_none());
    }

    #[test]
    fn wrong_port_names_the_ports_that_are_granted() {
        let rules = [host("api.example.com", &[443, 8443])];
        let t = target("api.example.com:80");
        let Decision::Denied(refusal) = policy().decide(&rules, &t, ip("93.184.216.34")) else {
            panic!("port 80 is not granted");
        };
        assert_eq!(
            refusal.rule(),
            "the host is granted only on ports 443, 8443"
        );
        assert_eq!(
            refusal.grant_hint(&t).unwrap(),
            "permissions.network.egress: [{host: api.example.com, ports: [80]}]"
        );
        assert_eq!(
            policy().precheck(&rules, &t),
            Some(Refusal::NotGranted {
                address: None,
                ports_for_host: vec![443, 8443]
            })
        );
    }

    #[test]
    fn wildcards_cover_subdomains_at_any_depth_but_not_the_domain() {
        let p = HostPattern::parse("*.example.com").unwrap();
        assert!(p.matches(&target("a.example.com:1").host));
        assert!(p.matches(&target("a.b.example.com:1").host));
        assert!(!p.matches(&target("example.com:1").host));
        assert!(!p.matches(&target("badexample.com:1").host));
        assert!(!p.matches(&target("example.com.evil.net:1").host));
        assert!(!p.matches(&target("93.184.216.34:1").host));
        assert_eq!(p.to_string(), "*.example.com");
        let any = HostPattern::parse("*").unwrap();
        assert!(any.matches(&target("anything.net:1").host));
        assert!(any.matches(&target("93.184.216.34:1").host));
        assert!(HostPattern::parse("*.").is_err());
        assert!(HostPattern::parse("**.example.com").is_err());
    }

    #[test]
    fn ip_literals_need_a_cidr_grant_or_star() {
        let t = target("93.184.216.34:443");
        let hosts = [host("api.example.com", &[443])];
        let Decision::Denied(refusal) = policy().decide(&hosts, &t, ip("93.184.216.34")) else {
            panic!("an IP literal is not a granted name");
        };
        assert_eq!(
            refusal.grant_hint(&t).unwrap(),
            "permissions.network.egress: [{cidr: 93.184.216.34/32, ports: [443]}]"
        );
        let cidrs = [cidr("93.184.216.0/24", &[443])];
        assert_eq!(
            allowed(&policy().decide(&cidrs, &t, ip("93.184.216.34"))),
            Some("93.184.216.0/24")
        );
        let star = [host("*", &[443])];
        assert_eq!(
            allowed(&policy().decide(&star, &t, ip("93.184.216.34"))),
            Some("*")
        );
    }

    #[test]
    fn loopback_and_metadata_are_refused_whatever_is_granted() {
        let rules = [
            host("*", &[80]),
            cidr("0.0.0.0/0", &[80]),
            cidr("::/0", &[80]),
        ];
        let t = target("innocent.example.com:80");
        for (addr, category) in [
            ("127.0.0.1", DenyCategory::Loopback),
            ("127.8.9.10", DenyCategory::Loopback),
            ("::1", DenyCategory::Loopback),
            ("169.254.169.254", DenyCategory::CloudMetadata),
            ("169.254.1.1", DenyCategory::LinkLocal),
            ("fe80::1", DenyCategory::LinkLocal),
            ("0.0.0.0", DenyCategory::Unspecified),
            ("::", DenyCategory::Unspecified),
            ("224.0.0.1", DenyCategory::Multicast),
            ("ff02::1", DenyCategory::Multicast),
            ("255.255.255.255", DenyCategory::Reserved),
        ] {
            let Decision::Denied(refusal) = policy().decide(&rules, &t, ip(addr)) else {
                panic!("{addr} must be refused");
            };
            assert!(
                matches!(refusal, Refusal::AlwaysDenied { category: c, .. } if c == category),
                "{addr}: {refusal:?}"
            );
            assert!(!refusal.grantable());
            assert_eq!(refusal.grant_hint(&t), None);
            assert_eq!(refusal.metric_bucket(), "denied:always");
        }
    }

    #[test]
    fn ipv6_forms_embedding_a_denied_ipv4_address_are_refused() {
        let rules = [host("*", &[80]), cidr("::/0", &[80])];
        let t = target("x.example.com:80");
        for addr in [
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
        ] {
            assert!(
                matches!(
                    policy().decide(&rules, &t, ip(addr)),
                    Decision::Denied(Refusal::AlwaysDenied { .. })
                ),
                "{addr}"
            );
        }
        assert_eq!(
            allowed(&policy().decide(&rules, &t, ip("2606:2800:220:1::1"))),
            Some("::/0")
        );
    }

    #[test]
    fn plugin_networks_of_the_gateways_interfaces_are_found() {
        let interfaces: Vec<IpNet> = ["172.20.0.2/16", "172.21.0.3/16", "172.22.0.2/16"]
            .iter()
            .map(|n| n.parse().unwrap())
            .collect();
        // Plugins sit on 172.20/16 and 172.21/16; 172.22/16 is a network without a plugin.
        let plugins = [ip("172.20.0.3"), ip("172.21.0.2")];
        assert_eq!(
            plugin_network(&interfaces, &plugins, ip("172.21.0.9")),
            Some("172.21.0.0/16".parse().unwrap())
        );
        assert_eq!(
            plugin_network(&interfaces, &plugins, ip("::ffff:172.20.0.3")),
            Some("172.20.0.0/16".parse().unwrap())
        );
        assert_eq!(
            plugin_network(&interfaces, &plugins, ip("172.22.0.5")),
            None
        );
        assert_eq!(plugin_network(&interfaces, &plugins, ip("10.0.0.1")), None);
        assert_eq!(plugin_network(&interfaces, &[], ip("172.20.0.3")), None);
        // The gateway's own address on a network without plugins.
        assert_eq!(
            own_address(&interfaces, ip("::ffff:172.22.0.2")),
            Some("172.22.0.2/32".parse().unwrap())
        );
        assert_eq!(own_address(&interfaces, ip("172.22.0.5")), None);
    }

    #[test]
    fn host_addresses_and_berth_networks_are_denied() {
        let deny = DenySet::builtin()
            .with_host_addresses([ip("203.0.113.7"), ip("::ffff:198.51.100.9")])
            .with_networks(
                ["172.30.0.0/16".parse().unwrap()],
                DenyCategory::BerthNetwork,
            );
        let p = EgressPolicy::new(deny, true);
        let rules = [host("*", &[443]), cidr("0.0.0.0/0", &[443])];
        let t = target("api.example.com:443");
        for (addr, category) in [
            ("203.0.113.7", DenyCategory::HostAddress),
            ("198.51.100.9", DenyCategory::HostAddress),
            ("172.30.4.5", DenyCategory::BerthNetwork),
            ("::ffff:172.30.4.5", DenyCategory::BerthNetwork),
        ] {
            assert!(
                matches!(
                    p.decide(&rules, &t, ip(addr)),
                    Decision::Denied(Refusal::AlwaysDenied { category: c, .. }) if c == category
                ),
                "{addr}"
            );
        }
        assert!(allowed(&p.decide(&rules, &t, ip("203.0.113.8"))).is_some());
    }

    #[test]
    fn private_ranges_need_the_platform_flag_or_a_cidr_grant() {
        let t = target("db.internal.example:5432");
        let by_name = [host("db.internal.example", &[5432])];
        for addr in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            "::ffff:10.1.2.3",
        ] {
            let Decision::Denied(refusal) = policy().decide(&by_name, &t, ip(addr)) else {
                panic!("{addr} is private");
            };
            assert_eq!(refusal.metric_bucket(), "denied:private", "{addr}");
            assert!(refusal.grantable());
        }
        let Decision::Denied(refusal) = policy().decide(&by_name, &t, ip("10.1.2.3")) else {
            unreachable!()
        };
        assert_eq!(
            refusal.grant_hint(&t).unwrap(),
            "permissions.network.egress: [{cidr: 10.1.2.3/32, ports: [5432]}]"
        );
        let permissive = EgressPolicy::new(DenySet::builtin(), true);
        assert_eq!(
            allowed(&permissive.decide(&by_name, &t, ip("10.1.2.3"))),
            Some("db.internal.example")
        );
        let by_cidr = [cidr("10.1.0.0/16", &[5432])];
        assert_eq!(
            allowed(&policy().decide(&by_cidr, &t, ip("10.1.2.3"))),
            Some("10.1.0.0/16")
        );
        assert!(allowed(&policy().decide(&by_cidr, &t, ip("10.2.0.1"))).is_none());
        assert!(allowed(&policy().decide(&by_cidr, &target("x:5433"), ip("10.1.2.3"))).is_none());
    }

    #[test]
    fn a_cidr_grant_cannot_open_the_deny_set() {
        let deny = DenySet::builtin()
            .with_networks(["10.1.0.0/16".parse().unwrap()], DenyCategory::BerthNetwork);
        let p = EgressPolicy::new(deny, true);
        let rules = [cidr("10.0.0.0/8", &[80]), cidr("127.0.0.0/8", &[80])];
        let t = target("10.1.0.5:80");
        assert!(matches!(
            p.decide(&rules, &t, ip("10.1.0.5")),
            Decision::Denied(Refusal::AlwaysDenied {
                category: DenyCategory::BerthNetwork,
                ..
            })
        ));
        assert!(matches!(
            p.decide(&rules, &target("127.0.0.1:80"), ip("127.0.0.1")),
            Decision::Denied(Refusal::AlwaysDenied {
                category: DenyCategory::Loopback,
                ..
            })
        ));
        assert_eq!(
            allowed(&p.decide(&rules, &target("10.2.0.5:80"), ip("10.2.0.5"))),
            Some("10.0.0.0/8")
        );
    }

    #[test]
    fn names_no_rule_can_cover_are_refused_before_resolution() {
        let rules = [host("api.example.com", &[443]), cidr("10.0.0.0/8", &[5432])];
        assert!(
            policy()
                .precheck(&rules, &target("api.example.com:443"))
                .is_none()
        );
        assert!(
            policy()
                .precheck(&rules, &target("evil.example.net:443"))
                .is_some()
        );
        // A CIDR rule on the port means the name must be resolved to know.
        assert!(policy().precheck(&rules, &target("db.corp:5432")).is_none());
        assert!(
            policy()
                .precheck(&[], &target("api.example.com:443"))
                .is_some()
        );
    }

    #[test]
    fn malformed_rules_match_nothing() {
        let rules = [host("bad host", &[80]), cidr("10.0.0.0/99", &[80])];
        let t = target("bad-host.example:80");
        assert!(allowed(&policy().decide(&rules, &t, ip("93.184.216.34"))).is_none());
        assert!(
            allowed(&policy().decide(&rules, &target("10.0.0.1:80"), ip("10.0.0.1"))).is_none()
        );
    }

    #[test]
    fn the_empty_deny_set_denies_nothing() {
        assert_eq!(DenySet::empty().find(ip("127.0.0.1")), None);
        assert!(DenySet::builtin().find(ip("127.0.0.1")).is_some());
        assert_eq!(DenySet::builtin().find(ip("93.184.216.34")), None);
    }
}
