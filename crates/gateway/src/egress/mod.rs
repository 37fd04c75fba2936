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
use std::time::Duration;

use futures::future::BoxFuture;

use crate::config::EgressConfig;

mod proxy;
pub mod rules;

pub use proxy::EgressProxy;
pub use rules::{
    Decision, DenyCategory, DenySet, EgressPolicy, HostPattern, Refusal, Target, TargetError,
    TargetHost, normalize_host,
};

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
        }
    }

    /// Settings from the flags: the always-on deny set over this machine's interface
    /// addresses (read now) and `--egress-deny`.
    pub fn from_config(config: &EgressConfig) -> io::Result<Self> {
        let host_addresses = if_addrs::get_if_addrs()?.into_iter().map(|i| i.ip());
        let deny = DenySet::always_on(host_addresses, config.deny.iter().copied());
        Ok(Self {
            check_source: config.check_source,
            connect_timeout: config.connect_timeout,
            idle_timeout: config.idle_timeout,
            max_tunnels: config.max_tunnels,
            ..Self::new(EgressPolicy::new(deny, config.allow_private))
        })
    }
}
