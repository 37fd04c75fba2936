//! The NetworkPolicy: nothing in but the gateway, nothing out but DNS, the gateway (API and
//! egress proxy) and granted CIDRs.

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
/// gateway pods on their API port and (with an egress proxy) the proxy port, and the granted
/// CIDRs on their ports. Host grants — named hosts, `*.example.com` and `*` alike — open
/// nothing here: they go through the gateway's egress proxy, which checks every address a
/// name resolves to against the grant and the always-on deny set.
pub fn render_network_policy(
    plugin: &Plugin,
    options: &RenderOptions,
    granted: &Permissions,
) -> NetworkPolicy {
    let gateway = peer_in_namespace(&options.gateway_namespace, &options.gateway_labels);
    let dns = peer_in_namespace(&options.dns_namespace, &options.dns_labels);

    let mut gateway_ports = vec![port("TCP", options.gateway_port)];
    if options.egress_proxy.is_some() && options.egress_proxy_port != options.gateway_port {
        gateway_ports.push(port("TCP", options.egress_proxy_port));
    }
    let mut egress = vec![
        NetworkPolicyEgressRule {
            to: Some(vec![dns]),
            ports: Some(vec![port("UDP", 53), port("TCP", 53)]),
        },
        NetworkPolicyEgressRule {
            to: Some(vec![gateway.clone()]),
            ports: Some(gateway_ports),
        },
    ];
    for rule in &granted.network.egress {
        let Some(cidr) = &rule.cidr else { continue };
        // Validation rejects a CIDR that does not parse first; never widen on a bad value.
        let Ok(net) = cidr.parse::<IpNet>() else {
            continue;
        };
        egress.push(NetworkPolicyEgressRule {
            to: Some(vec![NetworkPolicyPeer {
                ip_block: Some(IPBlock {
                    cidr: net.trunc().to_string(),
                    except: None,
                }),
                ..NetworkPolicyPeer::default()
            }]),
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
