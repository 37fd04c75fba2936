//! The one definition of a plugin's environment (`docs/protocol.md` §1.1). Both backends
//! call [`plugin_environment`] and only translate where each value comes from: the Docker
//! backend writes literal values, the operator renders `secretKeyRef`s.

use berth_api::{Plugin, SecretRef};

use crate::protocol::{
    ENV_GATEWAY_URL, ENV_PLUGIN_NAME, ENV_PLUGIN_TOKEN, ENV_PLUGIN_VERSION, ENV_PORT,
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
}

/// Every variable a plugin container gets, in a stable order: the protocol's own
/// (`BERTH_PORT`, `BERTH_PLUGIN_NAME`, `BERTH_PLUGIN_VERSION`, and behind a gateway
/// `BERTH_GATEWAY_URL` and `BERTH_PLUGIN_TOKEN`), then one per secret in `secrets` — the
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
    if let Some(gateway) = &deployment.gateway {
        env.push(EnvVar::value(ENV_GATEWAY_URL, gateway.url.clone()));
        env.push(EnvVar {
            name: ENV_PLUGIN_TOKEN.into(),
            source: gateway.token.clone(),
        });
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
            ["BERTH_PORT", "BERTH_PLUGIN_NAME", "BERTH_PLUGIN_VERSION"]
        );
        assert_eq!(
            env[5].source,
            EnvSource::Secret {
                name: "weather".into(),
                key: Some("api".into()),
                optional: false
            }
        );
    }
}
