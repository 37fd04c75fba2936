//! The NetworkPolicy: nothing in but the gateway, nothing out but DNS, the gateway and grants.

use std::collections::BTreeMap;

use berth_api::{Permissions, Plugin};
use ipnet::IpNet;
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{RenderOptions, object_meta, selector_labels};

/// Label every namespace carries with its own name (set by the API server since 1.21).
const NAMESPACE_NAME_LABEL: &str = "kubernetes.io/metadata.name";

/// Ingress only from the gateway pods on the plugin port. Egress only to the cluster DNS, the
/// gateway, and the granted CIDRs on their ports; a `*` host grant opens every address on its
/// ports. Named hosts are not opened here: the gateway's egress proxy enforces them, and the
/// pod carries them in the `berth.dev/egress-hosts` annotation for it.
pub fn render_network_policy(
    plugin: &Plugin,
    options: &RenderOptions,
    granted: &Permissions,
) -> NetworkPolicy {
    let gateway = peer_in_namespace(&options.gateway_namespace, &options.gateway_labels);
    let dns = peer_in_namespace(&options.dns_namespace, &options.dns_labels);

    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![dns]),
            ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![gateway.clone()]),
            ports: Some(vec![port("TCP", options.gateway_port)]),
        },
    ];
    for rule in &granted.network.egress {
        let blocks: Vec<String> = match (&rule.host, &rule.cidr) {
            (Some(host), _) if host == "*" => vec!["0.0.0.0/0".into(), "::/0".into()],
            (_, Some(cidr)) => match cidr.parse::<IpNet>() {
                Ok(net) => vec![net.trunc().to_string()],
                // Validation rejects such a rule first; never widen on a bad value.
                Err(_) => continue,
            },
            _ => continue,
        };
        egress.push(NetworkPolicyEgressRule {
            to: Some(
                blocks
                    .into_iter()
                    .map(|cidr| NetworkPolicyPeer {
                        ip_block: Some(IPBlock { cidr, except: None }),
                        ..NetworkPolicyPeer::default()
                    })
                    .collect(),
            ),
            ports: Some(rule.ports.iter().map(|p| port("TCP", *p)).collect()),
        });
    }

    NetworkPolicy {
        metadata: object_meta(plugin, options, &plugin.spec.version),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector_labels(plugin)),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(vec![gateway]),
                ports: Some(vec![port("TCP", plugin.spec.port)]),
            }]),
            egress: Some(egress),
        }),
    }
}

fn peer_in_namespace(namespace: &str, labels: &BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector {
            match_labels: Some(BTreeMap::from([(
                NAMESPACE_NAME_LABEL.to_string(),
                namespace.to_string(),
            )])),
            match_expressions: None,
        }),
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels.clone()),
            match_expressions: None,
        }),
        ip_block: None,
    }
}

fn port(protocol: &str, number: u16) -> NetworkPolicyPort {
    NetworkPolicyPort {
        protocol: Some(protocol.into()),
        port: Some(IntOrString::Int(i32::from(number))),
        end_port: None,
    }
}
