//! The egress proxy: the only way out for a plugin (docs/egress.md).
//!
//! Plugins send plain HTTP in absolute form (`GET http://host/path`) or open `CONNECT
//! host:port` tunnels (TLS stays end to end), with their own credential in the proxy URL
//! (`http://PLUGIN:TOKEN@gateway:PORT`). The proxy resolves names itself, checks every
//! address against the plugin's granted egress and the always-on deny set ([`rules`]), and
//! connects to an address it checked. It is off unless `--egress-listen` is set.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ipnet::IpNet;

use crate::config::EgressConfig;

mod proxy;
pub mod rules;
mod splice;

pub use proxy::EgressProxy;
pub use rules::{
    Decision, DenyCategory, DenySet, EgressPolicy, HostPattern, Refusal, Target, TargetError,
    TargetHost, normalize_host, own_address, plugin_network,
};

/// How often the gateway's interface networks are read again at most: the local gateway
/// joins a plugin's network when the plugin is installed, and reading them costs a
/// syscall per request otherwise.
const INTERFACE_REFRESH: Duration = Duration::from_secs(1);

type ReadNetworks = dyn Fn() -> io::Result<Vec<IpNet>> + Send + Sync;
/// When the networks were last read, and what they were.
type CachedNetworks = Option<(Instant, Arc<Vec<IpNet>>)>;

/// The networks of the gateway's own interfaces (address and netmask), read again at most
/// once per [`INTERFACE_REFRESH`], so networks joined after start-up count too.
#[derive(Clone)]
pub struct InterfaceNetworks {
    read: Arc<ReadNetworks>,
    cache: Arc<Mutex<CachedNetworks>>,
}

impl std::fmt::Debug for InterfaceNetworks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InterfaceNetworks").finish_non_exhaustive()
    }
}

impl InterfaceNetworks {
    /// This machine's interfaces, loopback excluded (the deny set covers it).
    pub fn system() -> Self {
        Self::with_reader(|| {
            Ok(if_addrs::get_if_addrs()?
                .into_iter()
                .filter(|i| !i.is_loopback())
                .filter_map(|i| match i.addr {
                    if_addrs::IfAddr::V4(a) => {
                        ipnet::Ipv4Net::new(a.ip, a.prefixlen).ok().map(IpNet::V4)
                    }
                    if_addrs::IfAddr::V6(a) => {
                        ipnet::Ipv6Net::new(a.ip, a.prefixlen).ok().map(IpNet::V6)
                    }
                })
                .collect())
        })
    }

    /// Networks from `read` (tests give a fixed or changing list).
    pub fn with_reader(read: impl Fn() -> io::Result<Vec<IpNet>> + Send + Sync + 'static) -> Self {
        Self {
            read: Arc::new(read),
            cache: Arc::new(Mutex::new(None)),
        }
    }

    /// The current networks: the cached list when it is younger than [`INTERFACE_REFRESH`],
    /// else read again (on a read error the last list is kept).
    pub fn current(&self) -> Arc<Vec<IpNet>> {
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match &*cache {
            Some((read_at, nets)) if read_at.elapsed() < INTERFACE_REFRESH => nets.clone(),
            previous => {
                let nets = match (self.read)() {
                    Ok(nets) => Arc::new(nets),
                    Err(e) => {
                        tracing::warn!(error = %e, "egress proxy: cannot read interface networks");
                        previous
                            .as_ref()
                            .map(|(_, n)| n.clone())
                            .unwrap_or_default()
                    }
                };
                *cache = Some((Instant::now(), nets.clone()));
                nets
            }
        }
    }
}

/// How the proxy turns a name into addresses. The proxy checks every address returned and
/// connects only to those, so a resolver cannot smuggle in an address that was not checked.
pub trait Resolver: Send + Sync + 'static {
    /// The addresses of `host` (a normalized name, never an IP literal).
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// The system resolver, through Tokio's `lookup_host`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemResolver;

impl Resolver for SystemResolver {
    fn resolve<'a>(&'a self, host: &'a str, port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        Box::pin(async move {
            let addrs = tokio::net::lookup_host((host, port)).await?;
            Ok(addrs.map(|a| a.ip()).collect())
        })
    }
}

/// A fixed name → addresses map, for tests and for pinning names.
#[derive(Clone, Debug, Default)]
pub struct StaticResolver {
    names: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty map: every name is unknown.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `name` (normalized here) resolving to `addresses`.
    pub fn with(mut self, name: &str, addresses: &[IpAddr]) -> Self {
        let key = normalize_host(name).unwrap_or_else(|_| name.to_owned());
        self.names.insert(key, addresses.to_vec());
        self
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, host: &'a str, _port: u16) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        let found = self.names.get(host).cloned();
        Box::pin(async move {
            found.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
        })
    }
}

/// Everything the proxy needs besides the gateway: policy, limits and timings.
#[derive(Clone, Debug)]
pub struct EgressSettings {
    /// Deny set and private-range rule.
    pub policy: EgressPolicy,
    /// Accept a credential only from one of its plugin's endpoint addresses.
    pub check_source: bool,
    /// Budget to resolve a name and connect to it.
    pub connect_timeout: Duration,
    /// A connection or tunnel idle this long is closed.
    pub idle_timeout: Duration,
    /// Open CONNECT tunnels per plugin.
    pub max_tunnels: usize,
    /// Largest request head accepted (431 beyond); at least 8 KiB.
    pub max_header_bytes: usize,
    /// The gateway's interface networks; their addresses ([`own_address`]) and those of
    /// the ones that hold a plugin ([`plugin_network`]) are refused. `None`: not checked
    /// (tests with loopback upstreams).
    pub interfaces: Option<InterfaceNetworks>,
    /// Move tunnel bytes with `splice(2)` (kernel to kernel); off, they are copied through
    /// user-space buffers. On by default; the benchmark compares both.
    pub splice_tunnels: bool,
}

impl EgressSettings {
    /// Settings over `policy`, with the flags' default limits.
    pub fn new(policy: EgressPolicy) -> Self {
        let defaults = EgressConfig::default();
        Self {
            policy,
            check_source: defaults.check_source,
            connect_timeout: defaults.connect_timeout,
            idle_timeout: defaults.idle_timeout,
            max_tunnels: defaults.max_tunnels,
            max_header_bytes: 64 * 1024,
            interfaces: None,
            splice_tunnels: true,
        }
    }

    /// Settings from the flags: the always-on deny set over this machine's interface
    /// addresses (read now) and `--egress-deny`, and the plugin networks among the
    /// interfaces' networks (read again as they change).
    pub fn from_config(config: &EgressConfig) -> io::Result<Self> {
        let mut host_addresses: Vec<IpAddr> = if_addrs::get_if_addrs()?
            .into_iter()
            .map(|i| i.ip())
            .collect();
        // The next hops are the host itself in a container (the bridge's address, where
        // the host's wildcard listeners answer), so they are the host's addresses too.
        if let Ok(routes) = std::fs::read_to_string("/proc/net/route") {
            host_addresses.extend(route_gateways(&routes));
        }
        let deny = DenySet::always_on(host_addresses, config.deny.iter().copied());
        Ok(Self {
            check_source: config.check_source,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            max_tunnels: config.max_tunnels,
            interfaces: Some(InterfaceNetworks::system()),
            ..Self::new(EgressPolicy::new(deny, config.allow_private))
        })
    }
}

/// The next-hop addresses of the IPv4 routing table (`/proc/net/route`: hexadecimal fields,
/// the address in the kernel's byte order).
pub fn route_gateways(proc_net_route: &str) -> Vec<IpAddr> {
    let mut gateways: Vec<IpAddr> = proc_net_route
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter_map(|hex| u32::from_str_radix(hex, 16).ok())
        .filter(|raw| *raw != 0)
        .map(|raw| IpAddr::from(raw.to_ne_bytes()))
        .collect();
    gateways.sort();
    gateways.dedup();
    gateways
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[test]
    fn next_hops_are_read_from_the_routing_table() {
        let table = "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
            eth0\t00000000\t010012AC\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
            eth0\t000012AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
            eth1\t0000A8C0\t0100A8C0\t0003\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
        let expected: Vec<IpAddr> = if cfg!(target_endian = "little") {
            vec![
                "172.18.0.1".parse().unwrap(),
                "192.168.0.1".parse().unwrap(),
            ]
        } else {
            vec![
                "1.0.18.172".parse().unwrap(),
                "1.0.168.192".parse().unwrap(),
            ]
        };
        assert_eq!(route_gateways(table), expected);
        assert!(route_gateways("").is_empty());
    }

    #[test]
    fn interface_networks_are_read_again_at_most_once_per_interval() {
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = reads.clone();
        let networks = InterfaceNetworks::with_reader(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst);
            Ok(vec![format!("172.{}.0.2/16", 20 + n).parse().unwrap()])
        });
        let first = networks.current();
        assert_eq!(*first, vec!["172.20.0.2/16".parse::<IpNet>().unwrap()]);
        for _ in 0..100 {
            assert_eq!(networks.current(), first);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        // Age the cache instead of sleeping.
        if let Some((read_at, _)) = networks.cache.lock().unwrap().as_mut() {
            *read_at -= INTERFACE_REFRESH;
        }
        assert_eq!(
            *networks.current(),
            vec!["172.21.0.2/16".parse::<IpNet>().unwrap()]
        );
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }
}
