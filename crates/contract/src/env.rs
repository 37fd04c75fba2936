//! The one definition of a plugin's environment (`docs/protocol.md` §1.1). Both backends
//! call [`plugin_environment`] and only translate where each value comes from: the Docker
//! backend writes literal values, the operator renders `secretKeyRef`s.

use berth_api::{Plugin, SecretRef};

use crate::protocol::{
    ENV_CPU_MILLIS, ENV_GATEWAY_URL, ENV_HTTP_PROXY, ENV_HTTPS_PROXY, ENV_MAX_CONCURRENCY,
    ENV_MEMORY_BYTES, ENV_NO_PROXY, ENV_PIDS, ENV_PLUGIN_NAME, ENV_PLUGIN_TOKEN,
    ENV_PLUGIN_VERSION, ENV_PORT, ENV_TIMEOUT_MS, ENV_TMP_BYTES,
};

/// Where one variable's value comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum EnvSource {
    /// The value itself.
    Value(String),
    /// A key of a secret the platform holds (a Kubernetes Secret, or an entry of local
    /// mode's secrets file).
    Secret {
        /// The secret's name.
        name: String,
        /// The key within it; `None` means the backend's default (`value` in a cluster,
        /// the bare name in the local secrets file).
        key: Option<String>,
        /// True when the plugin must start even while the secret does not exist yet.
        optional: bool,
    },
}

/// One environment variable of a plugin container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvVar {
    /// The variable's name.
    pub name: String,
    /// Its value, or where to find it.
    pub source: EnvSource,
}

impl EnvVar {
    fn value(name: &str, value: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            source: EnvSource::Value(value.into()),
        }
    }
}

/// What the deployment knows and the manifest does not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeploymentFacts {
    /// The gateway the plugin sits behind; `None` when it runs alone (`berth plugin test`).
    pub gateway: Option<GatewayAccess>,
}

/// How a plugin reaches the gateway, for calls to other plugins.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GatewayAccess {
    /// The gateway's base URL as the plugin reaches it, e.g. `http://172.20.0.2:7400`.
    pub url: String,
    /// The plugin's own credential (`BERTH_PLUGIN_TOKEN`).
    pub token: EnvSource,
    /// The egress proxy's `host:port` as the plugin reaches it; `None` when the plugin gets
    /// no proxy (it then reaches nothing outside).
    pub egress_proxy: Option<String>,
}

/// Every variable a plugin container gets, in a stable order: the protocol's own
/// (`BERTH_PORT`, `BERTH_PLUGIN_NAME`, `BERTH_PLUGIN_VERSION`, the limits of
/// `spec.resources` as decimal integers (`BERTH_MAX_CONCURRENCY`, `BERTH_MEMORY_BYTES`,
/// `BERTH_CPU_MILLIS`, `BERTH_PIDS`, `BERTH_TIMEOUT_MS`, `BERTH_TMP_BYTES`; decision 0065),
/// and behind a gateway
/// `BERTH_GATEWAY_URL` and `BERTH_PLUGIN_TOKEN`), then with an egress proxy
/// `HTTP_PROXY`, `HTTPS_PROXY`, `NO_PROXY` and their lower-case twins, then one per secret in `secrets` — the
/// secrets the plugin asks for that it may have (all of them locally, the granted ones in a
/// cluster).
pub fn plugin_environment(
    plugin: &Plugin,
    deployment: &DeploymentFacts,
    secrets: &[SecretRef],
) -> Vec<EnvVar> {
    let mut env = vec![
        EnvVar::value(ENV_PORT, plugin.spec.port.to_string()),
        EnvVar::value(ENV_PLUGIN_NAME, plugin.name()),
        EnvVar::value(ENV_PLUGIN_VERSION, plugin.spec.version.to_string()),
    ];
    // A manifest whose limits do not resolve is refused before anything runs; the
    // variables are left out rather than guessed.
    if let Ok(limits) = plugin.spec.resources.resolve() {
        env.extend([
            EnvVar::value(ENV_MAX_CONCURRENCY, limits.max_concurrency.to_string()),
            EnvVar::value(ENV_MEMORY_BYTES, limits.memory_bytes.to_string()),
            EnvVar::value(ENV_CPU_MILLIS, limits.cpu_millis.to_string()),
            EnvVar::value(ENV_PIDS, limits.pids.to_string()),
            EnvVar::value(ENV_TIMEOUT_MS, limits.timeout.as_millis().to_string()),
            EnvVar::value(ENV_TMP_BYTES, limits.tmp_bytes.to_string()),
        ]);
    }
    if let Some(gateway) = &deployment.gateway {
        env.push(EnvVar::value(ENV_GATEWAY_URL, gateway.url.clone()));
        env.push(EnvVar {
            name: ENV_PLUGIN_TOKEN.into(),
            source: gateway.token.clone(),
        });
        if let Some(proxy) = &gateway.egress_proxy {
            let url = proxy_url(plugin.name(), &gateway.token, proxy);
            let no_proxy = gateway_host(&gateway.url);
            for (name, value) in [
                (ENV_HTTP_PROXY, &url),
                (ENV_HTTPS_PROXY, &url),
                (ENV_NO_PROXY, &no_proxy),
            ] {
                env.push(EnvVar::value(name, value.clone()));
                env.push(EnvVar::value(&name.to_ascii_lowercase(), value.clone()));
            }
        }
    }
    env.extend(secrets.iter().map(|secret| EnvVar {
        name: secret.env.clone(),
        source: EnvSource::Secret {
            name: secret.name.clone(),
            key: secret.key.clone(),
            optional: false,
        },
    }));
    env
}

/// `http://PLUGIN:TOKEN@proxy`. A token held in a secret is written `$(BERTH_PLUGIN_TOKEN)`,
/// which Kubernetes expands from the variable defined before it in the same container.
fn proxy_url(plugin: &str, token: &EnvSource, proxy: &str) -> String {
    let token = match token {
        EnvSource::Value(token) => token.clone(),
        EnvSource::Secret { .. } => format!("$({ENV_PLUGIN_TOKEN})"),
    };
    format!("http://{plugin}:{token}@{proxy}")
}

/// The host of a base URL (`http://172.20.0.2:7400` → `172.20.0.2`, `http://[fd00::1]:7400`
/// → `fd00::1`), for `NO_PROXY`, so calls to the gateway do not go through the proxy.
fn gateway_host(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|uri| uri.host().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .unwrap_or_else(|| url.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_variables_come_first_then_secrets() {
        let plugin: Plugin = serde_yaml::from_str(
            "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: calc}\nspec:\n  image: berth/calc:0.2.0\n  version: 0.2.0\n  port: 9000\n  permissions:\n    secrets: [{name: weather, env: WEATHER_KEY, key: api}]\n",
        )
        .unwrap();
        let deployment = DeploymentFacts {
            gateway: Some(GatewayAccess {
                url: "http://gw:7400".into(),
                token: EnvSource::Value("t".into()),
                egress_proxy: None,
            }),
        };
        let env = plugin_environment(&plugin, &deployment, &plugin.spec.permissions.secrets);
        let names: Vec<&str> = env.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "BERTH_PORT",
                "BERTH_PLUGIN_NAME",
                "BERTH_PLUGIN_VERSION",
                "BERTH_MAX_CONCURRENCY",
                "BERTH_MEMORY_BYTES",
                "BERTH_CPU_MILLIS",
                "BERTH_PIDS",
                "BERTH_TIMEOUT_MS",
                "BERTH_TMP_BYTES",
                "BERTH_GATEWAY_URL",
                "BERTH_PLUGIN_TOKEN",
                "WEATHER_KEY"
            ]
        );
        assert_eq!(env[0].source, EnvSource::Value("9000".into()));
        assert_eq!(env[2].source, EnvSource::Value("0.2.0".into()));
        let alone = plugin_environment(&plugin, &DeploymentFacts::default(), &[]);
        let names: Vec<&str> = alone.iter().map(|v| v.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "BERTH_PORT",
                "BERTH_PLUGIN_NAME",
                "BERTH_PLUGIN_VERSION",
                "BERTH_MAX_CONCURRENCY",
                "BERTH_MEMORY_BYTES",
                "BERTH_CPU_MILLIS",
                "BERTH_PIDS",
                "BERTH_TIMEOUT_MS",
                "BERTH_TMP_BYTES"
            ]
        );
        assert_eq!(
            env[11].source,
            EnvSource::Secret {
                name: "weather".into(),
                key: Some("api".into()),
                optional: false
            }
        );
    }

    #[test]
    fn limits_are_the_resolved_resources_as_decimal_integers() {
        let plugin: Plugin = serde_yaml::from_str(
            "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: calc}\nspec:\n  image: berth/calc:0.2.0\n  version: 0.2.0\n  resources: {memory: 48Mi, cpu: 250m, pids: 32, timeout: 1500ms, tmp: 2Mi, maxConcurrency: 7}\n",
        )
        .unwrap();
        let env = plugin_environment(&plugin, &DeploymentFacts::default(), &[]);
        let limits: Vec<(&str, &EnvSource)> = env[3..]
            .iter()
            .map(|v| (v.name.as_str(), &v.source))
            .collect();
        let value = |v: &str| EnvSource::Value(v.into());
        assert_eq!(
            limits,
            [
                ("BERTH_MAX_CONCURRENCY", &value("7")),
                ("BERTH_MEMORY_BYTES", &value("50331648")),
                ("BERTH_CPU_MILLIS", &value("250")),
                ("BERTH_PIDS", &value("32")),
                ("BERTH_TIMEOUT_MS", &value("1500")),
                ("BERTH_TMP_BYTES", &value("2097152")),
            ]
        );
    }

    #[test]
    fn an_egress_proxy_carries_the_plugins_credential_and_skips_the_gateway() {
        let plugin: Plugin = serde_yaml::from_str(
            "apiVersion: berth.dev/v1alpha1\nkind: Plugin\nmetadata: {name: fetch}\nspec:\n  image: berth/fetch:0.1.0\n  version: 0.1.0\n",
        )
        .unwrap();
        let with = |token: EnvSource| DeploymentFacts {
            gateway: Some(GatewayAccess {
                url: "http://172.20.0.2:7400".into(),
                token,
                egress_proxy: Some("172.20.0.2:7401".into()),
            }),
        };
        let env = plugin_environment(&plugin, &with(EnvSource::Value("t0k".into())), &[]);
        let get = |env: &[EnvVar], name: &str| {
            env.iter()
                .find(|v| v.name == name)
                .map(|v| v.source.clone())
                .unwrap_or_else(|| panic!("{name} is not set"))
        };
        let proxy = EnvSource::Value("http://fetch:t0k@172.20.0.2:7401".into());
        for name in ["HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy"] {
            assert_eq!(get(&env, name), proxy, "{name}");
        }
        for name in ["NO_PROXY", "no_proxy"] {
            assert_eq!(get(&env, name), EnvSource::Value("172.20.0.2".into()));
        }
        let token_index = env.iter().position(|v| v.name == "BERTH_PLUGIN_TOKEN");
        let proxy_index = env.iter().position(|v| v.name == "HTTP_PROXY");
        assert!(
            token_index < proxy_index,
            "the token is defined before it is used"
        );

        let secret = EnvSource::Secret {
            name: "fetch-token".into(),
            key: Some("token".into()),
            optional: true,
        };
        let env = plugin_environment(&plugin, &with(secret), &[]);
        assert_eq!(
            get(&env, "https_proxy"),
            EnvSource::Value("http://fetch:$(BERTH_PLUGIN_TOKEN)@172.20.0.2:7401".into())
        );
    }

    #[test]
    fn the_gateway_host_is_taken_from_its_url() {
        assert_eq!(gateway_host("http://172.20.0.2:7400"), "172.20.0.2");
        assert_eq!(
            gateway_host("http://berth-gateway.berth.svc:7400/"),
            "berth-gateway.berth.svc"
        );
        assert_eq!(gateway_host("http://[fd00::2]:7400"), "fd00::2");
        assert_eq!(gateway_host("gw"), "gw");
    }
}
