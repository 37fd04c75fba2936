//! The gateway's configuration: one typed struct, parsed once from flags with `BERTH_*`
//! environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use berth_api::RiskTier;

/// Where audit events go.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuditSinkKind {
    /// The embedded SQLite store at `--store`.
    Sqlite,
    /// JSON lines on standard output.
    Stdout,
}

/// Everything `berth gateway` can be told.
#[derive(clap::Args, Clone, Debug)]
pub struct Config {
    /// Address to listen on. Keep it on loopback unless a proxy fronts the gateway.
    #[arg(long, env = "BERTH_LISTEN", default_value = "127.0.0.1:7400")]
    pub listen: SocketAddr,

    /// Plugin and PluginGrant manifests (files or directories) for the static directory.
    #[arg(
        long = "plugins",
        env = "BERTH_PLUGINS",
        value_delimiter = ',',
        value_name = "PATH"
    )]
    pub plugins: Vec<PathBuf>,

    /// The highest risk tier whose inter-plugin calls are allowed without a grant, with
    /// `--backend static` or `kubernetes` (must match the operator's).
    #[arg(
        long,
        env = "BERTH_AUTO_APPROVE_TIER",
        default_value = "low",
        value_name = "TIER"
    )]
    pub auto_approve_tier: RiskTier,

    /// Where a plugin is served: NAME=http://HOST:PORT (repeat for more instances).
    #[arg(long = "endpoint", env = "BERTH_ENDPOINTS", value_delimiter = ',', value_parser = parse_endpoint, value_name = "NAME=URL")]
    pub endpoints: Vec<(String, String)>,

    /// Tokens file: `NAME sha256:HEX SCOPES` per line (see `berth gateway token`).
    #[arg(long, env = "BERTH_TOKENS_FILE", value_name = "FILE")]
    pub tokens_file: Option<PathBuf>,

    /// Tokens in the tokens-file format, entries separated by `;` or newlines.
    #[arg(
        long,
        env = "BERTH_TOKENS",
        hide_env_values = true,
        value_name = "ENTRIES"
    )]
    pub tokens: Option<String>,

    /// The embedded store (audit log) of local mode.
    #[arg(
        long,
        env = "BERTH_STORE",
        default_value = ".berth/berth.db",
        value_name = "FILE"
    )]
    pub store: PathBuf,

    /// Audit sinks.
    #[arg(
        long = "audit-sink",
        env = "BERTH_AUDIT_SINKS",
        value_enum,
        value_delimiter = ',',
        default_value = "sqlite"
    )]
    pub audit_sinks: Vec<AuditSinkKind>,

    /// How often successful invocations are summarised into the audit log.
    #[arg(long, env = "BERTH_AUDIT_SUMMARY_INTERVAL", default_value = "60s", value_parser = parse_duration)]
    pub audit_summary_interval: Duration,

    /// Audit events queued for the sinks, besides security events, before new ones are
    /// dropped (counted in `berth_audit_dropped_total`).
    #[arg(long, env = "BERTH_AUDIT_QUEUE", default_value_t = crate::audit::DEFAULT_QUEUE_CAPACITY, value_parser = parse_capacity)]
    pub audit_queue: usize,

    /// Security events (denials, vetoes, permission decisions) queued for the sinks in
    /// their reserved lane, which the writer empties first.
    #[arg(long, env = "BERTH_AUDIT_SECURITY_QUEUE", default_value_t = crate::audit::DEFAULT_QUEUE_CAPACITY, value_parser = parse_capacity)]
    pub audit_security_queue: usize,

    /// A client must send a request's line and headers within this long, or its
    /// connection is closed (also bounds how long an idle keep-alive connection is kept).
    #[arg(long, env = "BERTH_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub header_read_timeout: Duration,

    /// A client must send a request's whole body within this long after its headers, or
    /// gets 408 `body_timeout` and its connection is closed.
    #[arg(long, env = "BERTH_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub body_read_timeout: Duration,

    /// Client connections served at once on `--listen`; further ones wait in the listen
    /// backlog until one closes.
    #[arg(long, env = "BERTH_MAX_CONNECTIONS", default_value_t = 1024, value_parser = parse_capacity)]
    pub max_connections: usize,

    /// Largest request body accepted (413 beyond), e.g. 1Mi.
    #[arg(long, env = "BERTH_MAX_BODY", default_value = "1Mi", value_parser = parse_bytes)]
    pub max_body: usize,

    /// Largest plugin answer accepted (502 beyond), e.g. 8Mi.
    #[arg(long, env = "BERTH_MAX_RESPONSE_BODY", default_value = "8Mi", value_parser = parse_bytes)]
    pub max_response_body: usize,

    /// Deadline of one hook delivery (a subscriber's own timeout may be shorter).
    #[arg(long, env = "BERTH_HOOK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub hook_timeout: Duration,

    /// Consecutive failures that open a plugin's circuit breaker (0 disables it).
    #[arg(long, env = "BERTH_BREAKER_FAILURES", default_value_t = 5)]
    pub breaker_failures: u32,

    /// How long an open breaker refuses calls before letting a probe through.
    #[arg(long, env = "BERTH_BREAKER_OPEN_FOR", default_value = "10s", value_parser = parse_duration)]
    pub breaker_open_for: Duration,

    /// Extra attempts for idempotent capabilities after a transport error or a 5xx.
    #[arg(long, env = "BERTH_RETRIES", default_value_t = 2)]
    pub retries: u32,

    /// Pause before the first retry; doubles with each further one.
    #[arg(long, env = "BERTH_RETRY_BACKOFF", default_value = "25ms", value_parser = parse_duration)]
    pub retry_backoff: Duration,

    /// Time allowed to open a connection to a plugin.
    #[arg(long, env = "BERTH_CONNECT_TIMEOUT", default_value = "1s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// Idle keep-alive connections kept per plugin instance.
    #[arg(long, env = "BERTH_POOL_IDLE_PER_HOST", default_value_t = 256)]
    pub pool_idle_per_host: usize,

    /// On SIGTERM/Ctrl-C, how long in-flight requests may take to finish.
    #[arg(long, env = "BERTH_SHUTDOWN_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_grace: Duration,

    /// How far back live tiers look: each plugin's tier is rated from the calls of the
    /// last `--tier-window`.
    #[arg(long, env = "BERTH_TIER_WINDOW", default_value = "5m", value_parser = parse_duration)]
    pub tier_window: Duration,

    /// How often live tiers are re-evaluated (the window advances in slots this long).
    #[arg(long, env = "BERTH_TIER_INTERVAL", default_value = "10s", value_parser = parse_duration)]
    pub tier_interval: Duration,

    /// Calls a plugin must have had in the window before it gets a live tier.
    #[arg(long, env = "BERTH_TIER_MIN_CALLS", default_value_t = 20, value_parser = parse_capacity)]
    pub tier_min_calls: usize,

    /// Tier thresholds (YAML or JSON: `latencyQuantile`, then `latencyMs`, `errorRatio`
    /// and `resourceRatio` under `platinum`, `gold` and `silver`); the defaults without.
    #[arg(long, env = "BERTH_TIER_THRESHOLDS", value_name = "FILE", value_parser = parse_tier_thresholds)]
    pub tier_thresholds: Option<berth_api::TierThresholds>,

    /// The egress proxy (off unless `--egress-listen` is given).
    #[command(flatten)]
    pub egress: EgressConfig,
}

impl Config {
    /// The live-tier settings these flags give.
    pub fn tier_settings(&self) -> crate::tiers::TierSettings {
        crate::tiers::TierSettings {
            window: self.tier_window,
            // A slot longer than the window would leave it empty between evaluations.
            interval: self.tier_interval.min(self.tier_window),
            min_calls: self.tier_min_calls as u64,
            thresholds: self.tier_thresholds.clone().unwrap_or_default(),
        }
    }
}

/// Reads and checks a tier thresholds file.
pub fn parse_tier_thresholds(path: &str) -> Result<berth_api::TierThresholds, String> {
    crate::tiers::load_thresholds(std::path::Path::new(path))
}

/// The egress proxy's flags (docs/egress.md).
#[derive(clap::Args, Clone, Debug)]
pub struct EgressConfig {
    /// Address the egress proxy listens on; unset, there is no proxy and plugins reach
    /// nothing outside.
    #[arg(
        id = "egress_listen",
        long = "egress-listen",
        env = "BERTH_EGRESS_LISTEN",
        value_name = "ADDR"
    )]
    pub listen: Option<SocketAddr>,

    /// Let host rules reach private ranges (10/8, 172.16/12, 192.168/16, 100.64/10,
    /// fc00::/7); without it only a CIDR grant naming the range does.
    #[arg(
        id = "egress_allow_private",
        long = "egress-allow-private",
        env = "BERTH_EGRESS_ALLOW_PRIVATE"
    )]
    pub allow_private: bool,

    /// Networks no grant may reach, on top of the always-on set: the plugin networks,
    /// pod and service CIDRs.
    #[arg(
        id = "egress_deny", long = "egress-deny",
        env = "BERTH_EGRESS_DENY",
        value_delimiter = ',',
        value_name = "CIDR",
        value_parser = parse_cidr
    )]
    pub deny: Vec<ipnet::IpNet>,

    /// Accept a plugin's credential only from one of its instances' addresses (local
    /// mode, where those addresses are known and not shared).
    #[arg(
        id = "egress_check_source",
        long = "egress-check-source",
        env = "BERTH_EGRESS_CHECK_SOURCE"
    )]
    pub check_source: bool,

    /// Time allowed to resolve and connect to an egress destination.
    #[arg(id = "egress_connect_timeout", long = "egress-connect-timeout", env = "BERTH_EGRESS_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    pub connect_timeout: Duration,

    /// An egress connection or tunnel with no byte either way for this long is closed.
    #[arg(id = "egress_idle_timeout", long = "egress-idle-timeout", env = "BERTH_EGRESS_IDLE_TIMEOUT", default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,

    /// Open CONNECT tunnels allowed per plugin (429 beyond).
    #[arg(
        id = "egress_max_tunnels",
        long = "egress-max-tunnels",
        env = "BERTH_EGRESS_MAX_TUNNELS",
        default_value_t = 64
    )]
    pub max_tunnels: usize,
}

impl Default for EgressConfig {
    fn default() -> Self {
        Self {
            listen: None,
            allow_private: false,
            deny: Vec::new(),
            check_source: false,
            connect_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(300),
            max_tunnels: 64,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7400)),
            plugins: Vec::new(),
            endpoints: Vec::new(),
            auto_approve_tier: RiskTier::Low,
            tokens_file: None,
            tokens: None,
            store: PathBuf::from(".berth/berth.db"),
            audit_sinks: vec![AuditSinkKind::Sqlite],
            audit_summary_interval: Duration::from_secs(60),
            audit_queue: crate::audit::DEFAULT_QUEUE_CAPACITY,
            audit_security_queue: crate::audit::DEFAULT_QUEUE_CAPACITY,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 1024,
            max_body: 1024 * 1024,
            max_response_body: 8 * 1024 * 1024,
            hook_timeout: Duration::from_secs(5),
            breaker_failures: 5,
            breaker_open_for: Duration::from_secs(10),
            retries: 2,
            retry_backoff: Duration::from_millis(25),
            connect_timeout: Duration::from_secs(1),
            pool_idle_per_host: 256,
            shutdown_grace: Duration::from_secs(30),
            tier_window: Duration::from_secs(300),
            tier_interval: Duration::from_secs(10),
            tier_min_calls: 20,
            tier_thresholds: None,
            egress: EgressConfig::default(),
        }
    }
}

/// Parses `5s`, `250ms`, `1m30s`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    berth_api::quantity::parse_duration(s).map_err(|e| format!("{} ({})", e.message, e.hint))
}

/// Parses a count that must be at least 1.
pub fn parse_capacity(s: &str) -> Result<usize, String> {
    match s.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{s:?} is not a whole number")),
    }
}

/// Parses `1Mi`, `512Ki`, `1048576`.
pub fn parse_bytes(s: &str) -> Result<usize, String> {
    let bytes = berth_api::Quantity::new(s)
        .bytes()
        .map_err(|e| format!("{} ({})", e.message, e.hint))?;
    usize::try_from(bytes).map_err(|_| format!("{s} is too large"))
}

/// Parses `10.0.0.0/8` or `fd00::/8` (a bare address is one host).
pub fn parse_cidr(s: &str) -> Result<ipnet::IpNet, String> {
    let s = s.trim();
    s.parse::<ipnet::IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
        .map(|n| n.trunc())
        .map_err(|_| format!("{s:?} is not a CIDR (try 10.0.0.0/8 or fd00::/8)"))
}

/// Parses `NAME=URL`.
pub fn parse_endpoint(s: &str) -> Result<(String, String), String> {
    let (name, url) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected NAME=http://HOST:PORT"))?;
    berth_contract::Endpoint::parse(url).map_err(|e| e.to_string())?;
    Ok((name.trim().to_owned(), url.trim().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        config: Config,
    }

    /// Parses flags only: `BERTH_*` variables of the environment running the tests are ignored.
    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        use clap::{CommandFactory, FromArgMatches};
        let command = Cli::command().mut_args(|a| a.env(None));
        let matches = command.try_get_matches_from(args)?;
        Ok(Cli::from_arg_matches(&matches)?.config)
    }

    #[test]
    fn defaults_match_the_flag_defaults() {
        let parsed = parse(&["berth-gateway"]).unwrap();
        let default = Config::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
    }

    #[test]
    fn flags_parse_into_typed_values() {
        let c = parse(&[
            "g",
            "--listen",
            "127.0.0.1:9000",
            "--endpoint",
            "calc=http://127.0.0.1:8080,echo=http://127.0.0.1:8081",
            "--max-body",
            "64Ki",
            "--breaker-open-for",
            "1m30s",
            "--audit-sink",
            "sqlite,stdout",
            "--audit-queue",
            "100",
            "--header-read-timeout",
            "2s",
            "--max-connections",
            "64",
        ])
        .unwrap();
        assert_eq!(c.audit_queue, 100);
        assert_eq!(c.header_read_timeout, Duration::from_secs(2));
        assert_eq!(c.max_connections, 64);
        assert!(parse(&["g", "--max-connections", "0"]).is_err());
        assert_eq!(c.listen.port(), 9000);
        assert_eq!(c.endpoints.len(), 2);
        assert_eq!(c.max_body, 64 * 1024);
        assert_eq!(c.breaker_open_for, Duration::from_secs(90));
        assert_eq!(
            c.audit_sinks,
            [AuditSinkKind::Sqlite, AuditSinkKind::Stdout]
        );
        assert!(parse(&["g", "--endpoint", "calc"]).is_err());
    }

    #[test]
    fn tier_flags_parse_and_a_bad_thresholds_file_names_file_and_field() {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("tiers.yaml");
        std::fs::write(
            &good,
            "platinum: {latencyMs: 50, errorRatio: 0.001, resourceRatio: 0.8}\n\
             gold: {latencyMs: 100, errorRatio: 0.01, resourceRatio: 0.9}\n\
             silver: {latencyMs: 200, errorRatio: 0.05, resourceRatio: 0.95}\n",
        )
        .unwrap();
        let c = parse(&[
            "g",
            "--tier-window",
            "1m",
            "--tier-interval",
            "2s",
            "--tier-min-calls",
            "5",
            "--tier-thresholds",
            good.to_str().unwrap(),
        ])
        .unwrap();
        let settings = c.tier_settings();
        assert_eq!(settings.window, Duration::from_secs(60));
        assert_eq!(settings.interval, Duration::from_secs(2));
        assert_eq!(settings.min_calls, 5);
        assert_eq!(settings.thresholds.platinum.latency_ms, 50.0);
        assert_eq!(settings.thresholds.latency_quantile, 0.9);
        assert!(parse(&["g", "--tier-min-calls", "0"]).is_err());

        let bad = dir.path().join("bad.yaml");
        std::fs::write(&bad, "platinum: {latencyMs: fast}\n").unwrap();
        let e = parse(&["g", "--tier-thresholds", bad.to_str().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.yaml: platinum.latencyMs:"), "{e}");
    }

    #[test]
    fn egress_flags_parse_and_the_proxy_is_off_by_default() {
        assert_eq!(parse(&["g"]).unwrap().egress.listen, None);
        let c = parse(&[
            "g",
            "--egress-listen",
            "0.0.0.0:3128",
            "--egress-allow-private",
            "--egress-deny",
            "172.30.0.0/16,fd00:b::/64,10.9.9.9",
            "--egress-check-source",
            "--egress-connect-timeout",
            "2s",
            "--egress-idle-timeout",
            "1m",
            "--egress-max-tunnels",
            "8",
        ])
        .unwrap()
        .egress;
        assert_eq!(c.listen.unwrap().port(), 3128);
        assert!(c.allow_private && c.check_source);
        assert_eq!(
            c.deny.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["172.30.0.0/16", "fd00:b::/64", "10.9.9.9/32"]
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(2));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.max_tunnels, 8);
        assert!(parse(&["g", "--egress-deny", "example.com"]).is_err());
    }
}
