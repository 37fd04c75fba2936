//! The operator's configuration: one typed struct, from flags with `BERTH_*` environment
//! fallbacks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use berth_api::RiskTier;

use crate::render::{BenchOptions, RenderOptions};

/// Flags of `berth operator`.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Watch only this namespace (default: every namespace).
    #[arg(long, env = "BERTH_WATCH_NAMESPACE", value_name = "NAMESPACE")]
    pub namespace: Option<String>,

    /// Plugins whose risk is at or under this tier run without a PluginGrant.
    #[arg(
        long,
        env = "BERTH_AUTO_APPROVE_TIER",
        default_value = "low",
        value_name = "TIER"
    )]
    pub auto_approve_tier: RiskTier,

    /// How many Plugins are reconciled at once.
    #[arg(long, env = "BERTH_OPERATOR_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..))]
    pub concurrency: u16,

    /// Address of the metrics and health endpoints (`/metrics`, `/healthz`, `/readyz`).
    #[arg(long, env = "BERTH_OPERATOR_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,

    /// URL plugins reach the gateway at (their `BERTH_GATEWAY_URL`).
    #[arg(
        long,
        env = "BERTH_GATEWAY_URL",
        default_value = "http://berth-gateway.berth-system.svc:8080"
    )]
    pub gateway_url: String,

    /// Namespace of the gateway pods (the only ingress plugins accept).
    #[arg(long, env = "BERTH_GATEWAY_NAMESPACE", default_value = "berth-system")]
    pub gateway_namespace: String,

    /// Labels selecting the gateway pods, `key=value[,key=value…]`.
    #[arg(
        long,
        env = "BERTH_GATEWAY_SELECTOR",
        default_value = "app.kubernetes.io/name=berth-gateway",
        value_parser = parse_selector
    )]
    pub gateway_selector: Selector,

    /// Port of the gateway pods (plugins may connect to it for inter-plugin calls).
    #[arg(long, env = "BERTH_GATEWAY_PORT", default_value_t = 8080)]
    pub gateway_port: u16,

    /// The gateway's egress proxy as plugins reach it, `host:port` (their `HTTP_PROXY`); an
    /// empty value gives plugins no proxy, so host grants reach nothing.
    #[arg(
        long,
        env = "BERTH_EGRESS_PROXY",
        default_value = crate::render::DEFAULT_EGRESS_PROXY,
        value_name = "HOST:PORT",
        value_parser = parse_proxy
    )]
    pub egress_proxy: EgressProxy,

    /// Port of the egress proxy on the gateway pods (their NetworkPolicy lets plugins reach
    /// it); by default the port of `--egress-proxy`.
    #[arg(long, env = "BERTH_EGRESS_PROXY_PORT", value_name = "PORT")]
    pub egress_proxy_port: Option<u16>,

    /// Namespace of the cluster DNS pods.
    #[arg(long, env = "BERTH_DNS_NAMESPACE", default_value = "kube-system")]
    pub dns_namespace: String,

    /// Labels selecting the cluster DNS pods, `key=value[,key=value…]`.
    #[arg(long, env = "BERTH_DNS_SELECTOR", default_value = "k8s-app=kube-dns", value_parser = parse_selector)]
    pub dns_selector: Selector,

    /// Seconds a rollout may take before it is rolled back to the last good revision.
    #[arg(long, env = "BERTH_PROGRESS_DEADLINE", default_value_t = 300, value_parser = clap::value_parser!(i32).range(10..))]
    pub progress_deadline_seconds: i32,

    /// Image of the PluginBenchmark Jobs (`berth bench`); the chart passes the operator's own.
    #[arg(
        long,
        env = "BERTH_BENCH_IMAGE",
        default_value = crate::render::DEFAULT_BENCH_IMAGE
    )]
    pub bench_image: String,

    /// Pull policy of the PluginBenchmark Jobs' image.
    #[arg(
        long,
        env = "BERTH_BENCH_IMAGE_PULL_POLICY",
        default_value = "IfNotPresent",
        value_parser = ["IfNotPresent", "Always", "Never"]
    )]
    pub bench_image_pull_policy: String,

    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, env = "BERTH_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,

    /// Name of the leader-election Lease.
    #[arg(long, env = "BERTH_LEASE_NAME", default_value = "berth-operator")]
    pub lease_name: String,

    /// Namespace of the leader-election Lease (usually the operator's own).
    #[arg(long, env = "BERTH_LEASE_NAMESPACE", default_value = "berth-system")]
    pub lease_namespace: String,

    /// This replica's identity in the Lease (default: the pod's host name).
    #[arg(long, env = "BERTH_POD_NAME")]
    pub identity: Option<String>,

    /// How long a leader's Lease is valid without renewal, in seconds.
    #[arg(long, env = "BERTH_LEASE_DURATION", default_value_t = 15, value_parser = clap::value_parser!(u64).range(2..))]
    pub lease_duration_seconds: u64,
}

/// `--egress-proxy`: a `host:port`, or none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EgressProxy(pub Option<(String, u16)>);

/// Parses `host:port` (a bracketed IPv6 host allowed), or an empty value for no proxy.
pub fn parse_proxy(s: &str) -> Result<EgressProxy, String> {
    let s = s.trim();
    if s.is_empty() {
        return Ok(EgressProxy(None));
    }
    let (host, port) = s.rsplit_once(':').ok_or_else(|| {
        format!("{s:?} is not host:port (e.g. berth-gateway.berth-system.svc:7401)")
    })?;
    let port: u16 = port
        .parse()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| format!("{s:?}: the port must be 1-65535"))?;
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(format!(
            "{s:?}: the host must be a name or an address, without scheme or user info (e.g. berth-gateway.berth-system.svc:7401)"
        ));
    }
    Ok(EgressProxy(Some((host.to_string(), port))))
}

/// A label selector given as `key=value` pairs.
pub type Selector = BTreeMap<String, String>;

/// Parses `key=value[,key=value…]`.
pub fn parse_selector(s: &str) -> Result<Selector, String> {
    let mut out = BTreeMap::new();
    for pair in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    if out.is_empty() {
        return Err("a selector needs at least one key=value".into());
    }
    Ok(out)
}

impl Config {
    /// The rendering options these flags describe.
    pub fn render_options(&self) -> RenderOptions {
        RenderOptions {
            gateway_url: self.gateway_url.clone(),
            gateway_namespace: self.gateway_namespace.clone(),
            gateway_labels: self.gateway_selector.clone(),
            gateway_port: self.gateway_port,
            egress_proxy: self
                .egress_proxy
                .0
                .as_ref()
                .map(|(host, port)| format!("{host}:{port}")),
            egress_proxy_port: self
                .egress_proxy_port
                .or(self.egress_proxy.0.as_ref().map(|(_, port)| *port))
                .unwrap_or(crate::render::DEFAULT_EGRESS_PROXY_PORT),
            dns_namespace: self.dns_namespace.clone(),
            dns_labels: self.dns_selector.clone(),
            progress_deadline_seconds: self.progress_deadline_seconds,
            default_namespace: "default".into(),
        }
    }

    /// What the PluginBenchmark Jobs run and where they reach the gateway.
    pub fn bench_options(&self) -> BenchOptions {
        BenchOptions {
            image: self.bench_image.clone(),
            image_pull_policy: self.bench_image_pull_policy.clone(),
            gateway_url: self.gateway_url.clone(),
        }
    }

    /// How long a Lease is valid without renewal.
    pub fn lease_duration(&self) -> Duration {
        Duration::from_secs(self.lease_duration_seconds)
    }
}

impl Default for Config {
    fn default() -> Self {
        let render = RenderOptions::default();
        Self {
            namespace: None,
            auto_approve_tier: RiskTier::Low,
            concurrency: 4,
            listen: SocketAddr::from(([0, 0, 0, 0], 8080)),
            gateway_url: render.gateway_url,
            gateway_namespace: render.gateway_namespace,
            gateway_selector: render.gateway_labels,
            gateway_port: render.gateway_port,
            egress_proxy: render
                .egress_proxy
                .as_deref()
                .map(|p| parse_proxy(p).expect("the default proxy parses"))
                .unwrap_or(EgressProxy(None)),
            egress_proxy_port: None,
            dns_namespace: render.dns_namespace,
            dns_selector: render.dns_labels,
            progress_deadline_seconds: render.progress_deadline_seconds,
            bench_image: crate::render::DEFAULT_BENCH_IMAGE.into(),
            bench_image_pull_policy: "IfNotPresent".into(),
            leader_elect: true,
            lease_name: "berth-operator".into(),
            lease_namespace: "berth-system".into(),
            identity: None,
            lease_duration_seconds: 15,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    #[test]
    fn defaults_match_the_rendering_defaults() {
        let cli = Cli::try_parse_from(["berth"]).unwrap();
        assert_eq!(cli.config.render_options(), RenderOptions::default());
        assert_eq!(cli.config.auto_approve_tier, RiskTier::Low);
        assert!(cli.config.leader_elect);
        assert_eq!(cli.config.bench_options(), BenchOptions::default());
    }

    #[test]
    fn flags_are_parsed() {
        let cli = Cli::try_parse_from([
            "berth",
            "--auto-approve-tier",
            "moderate",
            "--concurrency",
            "8",
            "--gateway-selector",
            "app=gw, tier=edge",
            "--leader-elect",
            "false",
        ])
        .unwrap();
        assert_eq!(cli.config.auto_approve_tier, RiskTier::Moderate);
        assert_eq!(cli.config.concurrency, 8);
        assert_eq!(cli.config.gateway_selector.len(), 2);
        assert!(!cli.config.leader_elect);
    }

    #[test]
    fn the_egress_proxy_can_be_moved_or_turned_off() {
        let cli = Cli::try_parse_from(["berth", "--egress-proxy", "gw.platform.svc:3128"]).unwrap();
        let options = cli.config.render_options();
        assert_eq!(
            options.egress_proxy.as_deref(),
            Some("gw.platform.svc:3128")
        );
        assert_eq!(options.egress_proxy_port, 3128);
        let cli = Cli::try_parse_from([
            "berth",
            "--egress-proxy",
            "gw.platform.svc:3128",
            "--egress-proxy-port",
            "7401",
        ])
        .unwrap();
        assert_eq!(cli.config.render_options().egress_proxy_port, 7401);
        let cli = Cli::try_parse_from(["berth", "--egress-proxy", ""]).unwrap();
        assert_eq!(cli.config.render_options().egress_proxy, None);
        for bad in ["gw", "gw:0", "gw:http", "http://gw:7401", ":7401"] {
            assert!(parse_proxy(bad).is_err(), "{bad}");
        }
        assert_eq!(
            parse_proxy("[fd00::1]:7401").unwrap(),
            EgressProxy(Some(("[fd00::1]".into(), 7401)))
        );
    }

    #[test]
    fn benchmark_jobs_take_the_image_and_the_gateway_url() {
        let cli = Cli::try_parse_from([
            "berth",
            "--bench-image",
            "registry.example/berth@sha256:00",
            "--bench-image-pull-policy",
            "Always",
            "--gateway-url",
            "http://gw.platform.svc:8080",
        ])
        .unwrap();
        let options = cli.config.bench_options();
        assert_eq!(options.image, "registry.example/berth@sha256:00");
        assert_eq!(options.image_pull_policy, "Always");
        assert_eq!(options.gateway_url, "http://gw.platform.svc:8080");
        assert!(Cli::try_parse_from(["berth", "--bench-image-pull-policy", "Sometimes"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["berth", "--auto-approve-tier", "extreme"]).is_err());
        assert!(Cli::try_parse_from(["berth", "--concurrency", "0"]).is_err());
        assert!(parse_selector("novalue").is_err());
    }
}
