//! The operator's configuration: one typed struct, from flags with `BERTH_*` environment
//! fallbacks.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_api::RiskTier;

use crate::render::{BenchOptions, RenderOptions};
use crate::supply_chain::SupplyChainOptions;

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

    /// Resolve each Plugin's image tag to the digest its registry holds and run that digest
    /// (`repo@sha256:…`); off, tags run as given and the digest is read from the pods.
    #[arg(long, env = "BERTH_PIN_DIGESTS", default_value_t = true, action = clap::ArgAction::Set)]
    pub pin_digests: bool,

    /// Seconds a tag's resolved digest is reused before the registry is asked again (a spec
    /// change asks at once; a `@sha256:` reference is never resolved).
    #[arg(long, env = "BERTH_RESOLVE_INTERVAL_SECONDS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(10..))]
    pub resolve_interval_seconds: u64,

    /// A `kubernetes.io/dockerconfigjson` Secret in each Plugin's namespace: the operator reads
    /// registry credentials from it and plugin pods pull with it (`imagePullSecrets`).
    /// Repeatable, or comma-separated in the variable.
    #[arg(
        long = "image-pull-secret",
        env = "BERTH_IMAGE_PULL_SECRETS",
        value_name = "NAME",
        value_delimiter = ',',
        value_parser = parse_object_name
    )]
    pub image_pull_secrets: Vec<String>,

    /// A registry (`host` or `host:port`) spoken to over plain HTTP; loopback registries
    /// always are. Repeatable.
    #[arg(
        long = "insecure-registry",
        env = "BERTH_INSECURE_REGISTRIES",
        value_name = "HOST[:PORT]",
        value_delimiter = ','
    )]
    pub insecure_registries: Vec<String>,

    /// Require plugins to carry a cosign signature by this public key: a PEM file, or a
    /// directory whose every file is one (a mounted ConfigMap). Repeatable: any key will do.
    /// The same flag as `berth dev up --require-signature`.
    #[arg(
        long = "require-signature",
        env = "BERTH_REQUIRE_SIGNATURE",
        value_name = "KEY.pub",
        value_delimiter = ','
    )]
    pub trusted_keys: Vec<PathBuf>,

    /// Which plugins must be signed: names, prefixes ending in `*`, or `*` [default: all,
    /// once a key is given]. Repeatable.
    #[arg(
        long = "signed-plugins",
        env = "BERTH_SIGNED_PLUGINS",
        value_name = "NAME",
        value_delimiter = ',',
        value_parser = parse_signature_pattern
    )]
    pub signed_plugins: Vec<String>,
}

/// A Secret name: a DNS subdomain (lower case, digits, `-` and `.`, at most 253 characters).
pub fn parse_object_name(s: &str) -> Result<String, String> {
    let s = s.trim();
    let valid = !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.starts_with(|c: char| c.is_ascii_alphanumeric())
        && s.ends_with(|c: char| c.is_ascii_alphanumeric());
    if valid {
        Ok(s.to_string())
    } else {
        Err(format!(
            "{s:?} is not a Secret name (lower-case letters, digits, '-' and '.', e.g. registry-pull)"
        ))
    }
}

/// A plugin name pattern: a name, a prefix ending in `*`, or `*`.
pub fn parse_signature_pattern(s: &str) -> Result<String, String> {
    let s = s.trim();
    let stem = s.strip_suffix('*').unwrap_or(s);
    if s.is_empty() || stem.contains('*') || stem.contains(char::is_whitespace) {
        return Err(format!(
            "{s:?} is not a plugin name pattern: give a name (calculator), a prefix ending in * (team-*), or * for every plugin"
        ));
    }
    Ok(s.to_string())
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
            image_pull_secrets: self.image_pull_secrets.clone(),
        }
    }

    /// How images are resolved and verified, with the trusted keys read from their files;
    /// `None` when `--pin-digests=false`. Fails, naming the flag and the fix, on a key that
    /// cannot be read or a signature requirement that nothing could satisfy.
    pub fn supply_chain(&self) -> Result<Option<SupplyChainOptions>, crate::Error> {
        let error = |message: String| crate::Error::Config(message);
        if !self.pin_digests {
            if !self.trusted_keys.is_empty() {
                return Err(error(
                    "--require-signature needs --pin-digests=true: a signature is checked on the digest the operator resolves and runs (chart: supplyChain.pinDigests)"
                        .into(),
                ));
            }
            return Ok(None);
        }
        let keys = crate::supply_chain::load_trusted_keys(&self.trusted_keys).map_err(error)?;
        if keys.is_empty() && !self.signed_plugins.is_empty() {
            return Err(error(format!(
                "--signed-plugins {} needs at least one --require-signature KEY.pub (chart: supplyChain.trustedKeys or supplyChain.existingTrustedKeysConfigMap): nothing could pass without a trusted key",
                self.signed_plugins.join(",")
            )));
        }
        // As with `berth dev up`: once a key is given, every plugin must be signed unless
        // --signed-plugins narrows it.
        let required = match (&keys[..], &self.signed_plugins[..]) {
            ([], _) => Vec::new(),
            (_, []) => vec!["*".to_string()],
            (_, patterns) => patterns.to_vec(),
        };
        let policy = berth_trust::Policy::new(keys, required).map_err(|e| error(e.message))?;
        Ok(Some(SupplyChainOptions {
            pull_secrets: self.image_pull_secrets.clone(),
            insecure_registries: self.insecure_registries.clone(),
            policy,
            resolve_interval: Duration::from_secs(self.resolve_interval_seconds),
        }))
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
            pin_digests: true,
            resolve_interval_seconds: 300,
            image_pull_secrets: Vec::new(),
            insecure_registries: Vec::new(),
            trusted_keys: Vec::new(),
            signed_plugins: Vec::new(),
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
    fn supply_chain_flags_are_parsed_and_reach_rendering() {
        let dir = tempfile::tempdir().unwrap();
        let pair = berth_trust::keys::generate(b"").unwrap();
        std::fs::write(dir.path().join("release.pub"), &pair.public_pem).unwrap();
        let keys = dir.path().to_string_lossy().into_owned();
        let cli = Cli::try_parse_from([
            "berth",
            "--image-pull-secret",
            "registry-pull",
            "--image-pull-secret",
            "mirror-a,mirror-b",
            "--insecure-registry",
            "registry.internal:5000",
            "--require-signature",
            &keys,
            "--signed-plugins",
            "team-*",
            "--signed-plugins",
            "calculator",
            "--resolve-interval-seconds",
            "60",
        ])
        .unwrap();
        let config = cli.config;
        assert_eq!(
            config.render_options().image_pull_secrets,
            ["registry-pull", "mirror-a", "mirror-b"]
        );
        let supply = config
            .supply_chain()
            .unwrap()
            .expect("digests are pinned by default");
        assert_eq!(supply.pull_secrets, config.image_pull_secrets);
        assert_eq!(supply.insecure_registries, ["registry.internal:5000"]);
        assert_eq!(supply.resolve_interval, Duration::from_secs(60));
        assert_eq!(supply.policy.keys()[0].name, "release.pub");
        assert!(supply.policy.requires("team-a") && supply.policy.requires("calculator"));
        assert!(!supply.policy.requires("hello"));
    }

    #[test]
    fn supply_chain_settings_that_cannot_work_are_named() {
        let parse = |args: &[&str]| {
            let mut all = vec!["berth"];
            all.extend_from_slice(args);
            Cli::try_parse_from(all).map(|c| c.config)
        };
        let e = parse(&["--signed-plugins", "*"])
            .unwrap()
            .supply_chain()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--require-signature KEY.pub") && e.contains("supplyChain.trustedKeys"),
            "{e}"
        );
        let dir = tempfile::tempdir().unwrap();
        let pair = berth_trust::keys::generate(b"").unwrap();
        std::fs::write(dir.path().join("release.pub"), &pair.public_pem).unwrap();
        let key = dir
            .path()
            .join("release.pub")
            .to_string_lossy()
            .into_owned();
        let e = parse(&["--pin-digests", "false", "--require-signature", &key])
            .unwrap()
            .supply_chain()
            .unwrap_err()
            .to_string();
        assert!(e.contains("--pin-digests=true"), "{e}");
        // A key alone requires every plugin to be signed, as `dev up` does.
        let all = parse(&["--require-signature", &key])
            .unwrap()
            .supply_chain()
            .unwrap()
            .unwrap();
        assert_eq!(all.policy.required(), ["*"]);
        assert!(
            parse(&["--pin-digests", "false"])
                .unwrap()
                .supply_chain()
                .unwrap()
                .is_none()
        );
        let e = parse(&["--require-signature", "/nonexistent/release.pub"])
            .unwrap()
            .supply_chain()
            .unwrap_err();
        assert_eq!(e.metric_label(), "config");
        assert!(e.to_string().contains("/nonexistent/release.pub"), "{e}");
        assert!(parse(&["--image-pull-secret", "Registry_Pull"]).is_err());
        assert!(parse(&["--signed-plugins", "a*b"]).is_err());
        assert!(parse(&["--resolve-interval-seconds", "1"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(Cli::try_parse_from(["berth", "--auto-approve-tier", "extreme"]).is_err());
        assert!(Cli::try_parse_from(["berth", "--concurrency", "0"]).is_err());
        assert!(parse_selector("novalue").is_err());
    }
}
