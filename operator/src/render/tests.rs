use berth_api::{Access, EgressRule, FilesystemMount, KubernetesRule, Permissions, SecretRef};
use serde_json::{Value, json};

use super::*;

fn plugin(yaml: &str) -> Plugin {
    let mut p: Plugin = serde_yaml::from_str(yaml).expect("test plugin parses");
    p.metadata.namespace = Some("tools".into());
    p.metadata.uid = Some("0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e".into());
    p
}

fn calculator() -> Plugin {
    plugin(
        r#"
apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: calculator}
spec:
  image: berth/calculator:0.1.0
  version: 0.1.0
  resources: {cpu: 250m, memory: 32Mi, tmp: 1Mi}
"#,
    )
}

fn rendered_with(p: &Plugin, granted: &Permissions) -> Rendered {
    let options = RenderOptions::default();
    let revision = RevisionToRun::of_spec(p, 1);
    render(RenderInput {
        plugin: p,
        granted,
        revision: &revision,
        options: &options,
    })
    .expect("renders")
}

fn rendered(p: &Plugin) -> Rendered {
    rendered_with(p, &p.spec.permissions)
}

fn deployment_json(r: &Rendered) -> Value {
    serde_json::to_value(&r.deployment).unwrap()
}

fn container(r: &Rendered) -> Value {
    deployment_json(r)["spec"]["template"]["spec"]["containers"][0].clone()
}

#[test]
fn every_object_carries_the_common_labels_and_an_owner_reference() {
    let r = rendered(&calculator());
    for object in r.to_values() {
        let labels = &object["metadata"]["labels"];
        assert_eq!(labels["berth.dev/plugin"], "calculator", "{object}");
        assert_eq!(labels["app.kubernetes.io/name"], "calculator");
        assert_eq!(labels["app.kubernetes.io/instance"], "calculator");
        assert_eq!(labels["app.kubernetes.io/version"], "0.1.0");
        assert_eq!(labels["app.kubernetes.io/managed-by"], "berth-operator");
        assert_eq!(labels["app.kubernetes.io/part-of"], "berth");
        assert_eq!(object["metadata"]["namespace"], "tools");
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(owner["kind"], "Plugin");
        assert_eq!(owner["apiVersion"], "berth.dev/v1alpha1");
        assert_eq!(owner["controller"], true);
        assert_eq!(owner["blockOwnerDeletion"], true);
        assert_eq!(owner["uid"], "0b6f1c2e-3d4a-4b5c-8d9e-0f1a2b3c4d5e");
    }
}

#[test]
fn a_plugin_read_from_a_file_has_no_owner_reference() {
    let mut p = calculator();
    p.metadata.uid = None;
    let r = rendered(&p);
    assert!(r.deployment.metadata.owner_references.is_none());
}

#[test]
fn deployment_meets_the_restricted_pod_security_standard() {
    let d = deployment_json(&rendered(&calculator()));
    let pod = &d["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 65532);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(pod["automountServiceAccountToken"], false);
    assert_eq!(pod["enableServiceLinks"], false);
    assert_eq!(pod["serviceAccountName"], "calculator");
    let sc = &pod["containers"][0]["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["runAsUser"], 65532);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["capabilities"].get("add"), None);
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
}

#[test]
fn deployment_sets_limits_requests_and_a_memory_backed_tmp() {
    let r = rendered(&calculator());
    let c = container(&r);
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "250m", "memory": "32Mi"})
    );
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "62m", "memory": "32Mi"})
    );
    let d = deployment_json(&r);
    let volumes = &d["spec"]["template"]["spec"]["volumes"];
    assert_eq!(
        volumes[0],
        json!({"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "1Mi"}})
    );
    assert_eq!(
        c["volumeMounts"][0],
        json!({"name": "tmp", "mountPath": "/tmp"})
    );
}

#[test]
fn defaults_apply_when_no_limits_are_given() {
    let p = plugin(
        r#"
apiVersion: berth.dev/v1alpha1
kind: Plugin
metadata: {name: tiny}
spec: {image: berth/tiny:1.0.0, version: 1.0.0}
"#,
    );
    let c = container(&rendered(&p));
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "128Mi"})
    );
}

#[test]
fn deployment_probes_healthz_and_rolls_out_without_dropping_pods() {
    let r = rendered(&calculator());
    let c = container(&r);
    for probe in ["readinessProbe", "livenessProbe", "startupProbe"] {
        assert_eq!(c[probe]["httpGet"]["path"], "/healthz", "{probe}");
        assert_eq!(c[probe]["httpGet"]["port"], "http", "{probe}");
    }
    assert_eq!(c["ports"][0]["containerPort"], 8080);
    let d = deployment_json(&r);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxSurge"], 1);
    assert_eq!(d["spec"]["progressDeadlineSeconds"], 300);
    assert_eq!(d["spec"]["replicas"], 1);
    assert_eq!(
        d["spec"]["selector"]["matchLabels"],
        json!({"berth.dev/plugin": "calculator"})
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["berth.dev/revision"],
        "1"
    );
    assert_eq!(d["metadata"]["annotations"]["berth.dev/revision"], "1");
}

#[test]
fn deployment_runs_the_image_of_the_revision() {
    let p = calculator();
    let options = RenderOptions::default();
    let revision = RevisionToRun {
        number: 4,
        image: "berth/calculator@sha256:0000000000000000000000000000000000000000000000000000000000000001".into(),
        version: "0.0.9".into(),
    };
    let r = render(RenderInput {
        plugin: &p,
        granted: &p.spec.permissions,
        revision: &revision,
        options: &options,
    })
    .unwrap();
    let d = deployment_json(&r);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        revision.image
    );
    assert_eq!(
        d["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/version"],
        "0.0.9"
    );
    assert_eq!(d["metadata"]["annotations"]["berth.dev/revision"], "4");
}

#[test]
fn pull_secrets_are_rendered_only_when_configured() {
    let p = calculator();
    let spec = deployment_json(&rendered(&p))["spec"]["template"]["spec"].clone();
    assert!(spec.get("imagePullSecrets").is_none());
    let options = RenderOptions {
        image_pull_secrets: vec!["registry-pull".into(), "mirror".into()],
        ..RenderOptions::default()
    };
    let revision = RevisionToRun {
        number: 1,
        image: format!(
            "registry.example/berth/calculator@sha256:{}",
            "ab".repeat(32)
        ),
        version: "0.1.0".into(),
    };
    let r = render(RenderInput {
        plugin: &p,
        granted: &p.spec.permissions,
        revision: &revision,
        options: &options,
    })
    .unwrap();
    let spec = deployment_json(&r)["spec"]["template"]["spec"].clone();
    assert_eq!(
        spec["imagePullSecrets"],
        json!([{"name": "registry-pull"}, {"name": "mirror"}])
    );
    assert_eq!(spec["containers"][0]["image"], revision.image.as_str());
}

#[test]
fn disabled_plugin_scales_to_zero() {
    let mut p = calculator();
    p.spec.enabled = false;
    let d = deployment_json(&rendered(&p));
    assert_eq!(d["spec"]["replicas"], 0);
}

#[test]
fn environment_names_the_gateway_port_and_token() {
    let c = container(&rendered(&calculator()));
    let env = c["env"].as_array().unwrap();
    let find = |name: &str| env.iter().find(|e| e["name"] == name).cloned();
    assert_eq!(find("BERTH_PORT").unwrap()["value"], "8080");
    assert_eq!(find("BERTH_PLUGIN_NAME").unwrap()["value"], "calculator");
    assert_eq!(find("BERTH_PLUGIN_VERSION").unwrap()["value"], "0.1.0");
    assert_eq!(
        find("BERTH_GATEWAY_URL").unwrap()["value"],
        "http://berth-gateway.berth-system.svc:8080"
    );
    assert_eq!(
        find("BERTH_PLUGIN_TOKEN").unwrap()["valueFrom"]["secretKeyRef"],
        json!({"name": "calculator-berth-token-1", "key": "token"})
    );
}

#[test]
fn environment_carries_the_resolved_limits_as_decimal_integers() {
    let c = container(&rendered(&calculator()));
    let env = c["env"].as_array().unwrap();
    let value = |name: &str| {
        env.iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name} is not in {env:?}"))["value"]
            .clone()
    };
    assert_eq!(value("BERTH_MAX_CONCURRENCY"), "64");
    assert_eq!(value("BERTH_MEMORY_BYTES"), "33554432");
    assert_eq!(value("BERTH_CPU_MILLIS"), "250");
    assert_eq!(value("BERTH_PIDS"), "64");
    assert_eq!(value("BERTH_TIMEOUT_MS"), "10000");
    assert_eq!(value("BERTH_TMP_BYTES"), "1048576");
    // The variables say what the pod is held to: the same numbers as its limits.
    let limits = &c["resources"]["limits"];
    assert_eq!(limits["memory"], "32Mi");
    assert_eq!(limits["cpu"], "250m");
}

#[test]
fn proxy_variables_carry_the_token_from_the_revisions_secret() {
    let c = container(&rendered(&calculator()));
    let env = c["env"].as_array().unwrap();
    let position = |name: &str| env.iter().position(|e| e["name"] == name).unwrap();
    let proxy = "http://calculator:$(BERTH_PLUGIN_TOKEN)@berth-gateway.berth-system.svc:7401";
    for name in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
        assert_eq!(env[position(name)]["value"], proxy, "{name}");
        // Kubernetes expands $(VAR) only from variables defined earlier in the list.
        assert!(position("BERTH_PLUGIN_TOKEN") < position(name), "{name}");
    }
    for name in ["NO_PROXY", "no_proxy"] {
        assert_eq!(
            env[position(name)]["value"],
            "berth-gateway.berth-system.svc"
        );
    }

    let options = RenderOptions {
        egress_proxy: None,
        ..RenderOptions::default()
    };
    let p = calculator();
    let revision = RevisionToRun::of_spec(&p, 4);
    let r = render(RenderInput {
        plugin: &p,
        granted: &p.spec.permissions,
        revision: &revision,
        options: &options,
    })
    .unwrap();
    let c = container(&r);
    let env = c["env"].as_array().unwrap();
    assert!(!env.iter().any(|e| e["name"] == "HTTP_PROXY"));
    let token = env
        .iter()
        .find(|e| e["name"] == "BERTH_PLUGIN_TOKEN")
        .unwrap();
    assert_eq!(
        token["valueFrom"]["secretKeyRef"]["name"],
        "calculator-berth-token-4"
    );
}

#[test]
fn token_secret_is_immutable_owned_labelled_and_per_revision() {
    let p = calculator();
    let secret = render_token_secret(&p, &RenderOptions::default(), 3, "t0k3n");
    let v = serde_json::to_value(&secret).unwrap();
    assert_eq!(v["metadata"]["name"], "calculator-berth-token-3");
    assert_eq!(v["metadata"]["namespace"], "tools");
    assert_eq!(
        v["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "berth-operator"
    );
    assert_eq!(v["metadata"]["labels"]["berth.dev/revision"], "3");
    assert_eq!(v["metadata"]["ownerReferences"][0]["kind"], "Plugin");
    assert_eq!(v["immutable"], true);
    assert_eq!(v["type"], "Opaque");
    // "t0k3n" in base64: the token is in the Secret's data and nowhere else.
    assert_eq!(v["data"]["token"], "dDBrM24=");
}

#[test]
fn secret_permission_becomes_a_secret_env_var() {
    let mut p = calculator();
    p.spec.permissions.secrets.push(SecretRef {
        name: "weather-api".into(),
        env: "WEATHER_API_KEY".into(),
        key: None,
    });
    p.spec.permissions.secrets.push(SecretRef {
        name: "db".into(),
        env: "DB_PASSWORD".into(),
        key: Some("password".into()),
    });
    let c = container(&rendered(&p));
    let env = c["env"].as_array().unwrap();
    let find = |name: &str| env.iter().find(|e| e["name"] == name).cloned().unwrap();
    assert_eq!(
        find("WEATHER_API_KEY")["valueFrom"]["secretKeyRef"],
        json!({"name": "weather-api", "key": "value"})
    );
    assert_eq!(
        find("DB_PASSWORD")["valueFrom"]["secretKeyRef"],
        json!({"name": "db", "key": "password"})
    );
}

#[test]
fn an_ungranted_secret_is_not_exposed() {
    let mut p = calculator();
    p.spec.permissions.secrets.push(SecretRef {
        name: "weather-api".into(),
        env: "WEATHER_API_KEY".into(),
        key: None,
    });
    let c = container(&rendered_with(&p, &Permissions::default()));
    assert!(
        !c["env"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "WEATHER_API_KEY")
    );
}

#[test]
fn filesystem_permission_mounts_a_claim_with_its_access() {
    let mut p = calculator();
    p.spec.permissions.filesystem = vec![
        FilesystemMount {
            name: "workspace".into(),
            mount_path: "/workspace".into(),
            access: Access::ReadWrite,
        },
        FilesystemMount {
            name: "models".into(),
            mount_path: "/models".into(),
            access: Access::ReadOnly,
        },
    ];
    let r = rendered(&p);
    let d = deployment_json(&r);
    let volumes = d["spec"]["template"]["spec"]["volumes"].as_array().unwrap();
    assert_eq!(
        volumes[1],
        json!({"name": "fs-workspace", "persistentVolumeClaim": {"claimName": "workspace", "readOnly": false}})
    );
    assert_eq!(
        volumes[2],
        json!({"name": "fs-models", "persistentVolumeClaim": {"claimName": "models", "readOnly": true}})
    );
    let mounts = container(&r)["volumeMounts"].clone();
    assert_eq!(
        mounts[1],
        json!({"name": "fs-workspace", "mountPath": "/workspace", "readOnly": false})
    );
    assert_eq!(
        mounts[2],
        json!({"name": "fs-models", "mountPath": "/models", "readOnly": true})
    );
}

#[test]
fn no_kubernetes_permission_means_no_role_and_no_token() {
    let r = rendered(&calculator());
    assert!(r.role.is_none());
    assert!(r.role_binding.is_none());
    assert_eq!(
        r.service_account.automount_service_account_token,
        Some(false)
    );
    assert_eq!(r.to_values().len(), 4);
}

#[test]
fn kubernetes_permission_renders_a_role_binding_and_mounts_the_token() {
    let mut p = calculator();
    p.spec.permissions.kubernetes.push(KubernetesRule {
        api_groups: vec![],
        resources: vec!["configmaps".into()],
        verbs: vec!["get".into(), "list".into()],
        resource_names: vec!["settings".into()],
    });
    let r = rendered(&p);
    let role = serde_json::to_value(r.role.as_ref().unwrap()).unwrap();
    assert_eq!(
        role["rules"],
        json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list"], "resourceNames": ["settings"]}])
    );
    let binding = serde_json::to_value(r.role_binding.as_ref().unwrap()).unwrap();
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "calculator"})
    );
    assert_eq!(
        binding["subjects"],
        json!([{"kind": "ServiceAccount", "name": "calculator", "namespace": "tools"}])
    );
    assert_eq!(
        r.service_account.automount_service_account_token,
        Some(true)
    );
    let d = deployment_json(&r);
    assert_eq!(
        d["spec"]["template"]["spec"]["automountServiceAccountToken"],
        true
    );
    assert_eq!(r.to_values().len(), 6);
}

#[test]
fn service_exposes_the_plugin_port() {
    let mut p = calculator();
    p.spec.port = 9000;
    let s = serde_json::to_value(rendered(&p).service).unwrap();
    assert_eq!(
        s["spec"],
        json!({
            "type": "ClusterIP",
            "selector": {"berth.dev/plugin": "calculator"},
            "ports": [{"name": "http", "protocol": "TCP", "port": 9000, "targetPort": "http"}]
        })
    );
    assert_eq!(
        endpoint(&p, &RenderOptions::default()),
        "http://calculator.tools.svc:9000"
    );
}

fn policy(p: &Plugin) -> Value {
    serde_json::to_value(rendered(p).network_policy).unwrap()
}

#[test]
fn network_policy_admits_only_the_gateway() {
    let np = policy(&calculator());
    assert_eq!(np["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert_eq!(
        np["spec"]["ingress"],
        json!([{
            "from": [{
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "berth-system"}},
                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "berth-gateway"}}
            }],
            "ports": [{"protocol": "TCP", "port": 8080}]
        }])
    );
}

#[test]
fn network_policy_without_grants_reaches_only_dns_and_the_gateway() {
    let np = policy(&calculator());
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2);
    assert_eq!(
        egress[1]["ports"],
        json!([{"protocol": "TCP", "port": 8080}, {"protocol": "TCP", "port": 7401}]),
        "the gateway's API and its egress proxy"
    );
    assert_eq!(
        egress[1]["to"][0]["namespaceSelector"]["matchLabels"],
        json!({"kubernetes.io/metadata.name": "berth-system"})
    );
    assert_eq!(
        egress[0]["to"][0]["podSelector"]["matchLabels"],
        json!({"k8s-app": "kube-dns"})
    );
    assert_eq!(
        egress[0]["ports"],
        json!([{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}])
    );
    assert_eq!(
        egress[1]["to"][0]["podSelector"]["matchLabels"],
        json!({"app.kubernetes.io/name": "berth-gateway"})
    );
}

#[test]
fn cidr_grant_opens_that_network_on_its_ports() {
    let mut p = calculator();
    p.spec.permissions.network.egress = vec![
        EgressRule {
            host: None,
            cidr: Some("10.20.0.0/16".into()),
            ports: vec![5432],
        },
        EgressRule {
            host: None,
            cidr: Some("fd00::1/64".into()),
            ports: vec![443, 8443],
        },
    ];
    let np = policy(&p);
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 4);
    assert_eq!(
        egress[2],
        json!({"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 5432}]})
    );
    assert_eq!(egress[3]["to"][0]["ipBlock"]["cidr"], "fd00::/64");
    assert_eq!(egress[3]["ports"][1]["port"], 8443);
}

#[test]
fn host_grants_open_nothing_directly_and_go_through_the_proxy() {
    let mut p = calculator();
    p.spec.permissions.network.egress = vec![
        EgressRule {
            host: Some("*".into()),
            cidr: None,
            ports: vec![80, 443],
        },
        EgressRule {
            host: Some("api.example.com".into()),
            cidr: None,
            ports: vec![443],
        },
        EgressRule {
            host: Some("*.example.org".into()),
            cidr: None,
            ports: vec![443],
        },
    ];
    let r = rendered(&p);
    let np = serde_json::to_value(&r.network_policy).unwrap();
    let egress = np["spec"]["egress"].as_array().unwrap();
    assert_eq!(egress.len(), 2, "only DNS and the gateway: {egress:?}");
    assert!(!np.to_string().contains("ipBlock"));
    let d = deployment_json(&r);
    assert!(d["spec"]["template"]["metadata"]["annotations"].is_null());
}

#[test]
fn without_a_proxy_the_gateway_is_reached_on_its_api_port_only() {
    let p = calculator();
    let options = RenderOptions {
        egress_proxy: None,
        ..RenderOptions::default()
    };
    let np =
        serde_json::to_value(render_network_policy(&p, &options, &p.spec.permissions)).unwrap();
    assert_eq!(
        np["spec"]["egress"][1]["ports"],
        json!([{"protocol": "TCP", "port": 8080}])
    );
}

#[test]
fn granted_permissions_are_recorded_on_the_deployment() {
    let mut p = calculator();
    p.spec.permissions.secrets.push(SecretRef {
        name: "weather-api".into(),
        env: "WEATHER_API_KEY".into(),
        key: None,
    });
    let d = deployment_json(&rendered(&p));
    let recorded: Permissions = serde_json::from_str(
        d["metadata"]["annotations"][PERMISSIONS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(recorded, p.spec.permissions);
}

#[test]
fn version_label_drops_characters_labels_cannot_hold() {
    assert_eq!(label_value("1.0.0+build.5"), "1.0.0_build.5");
    assert_eq!(label_value("1.0.0-rc.1"), "1.0.0-rc.1");
    assert_eq!(label_value(&"9".repeat(80)).len(), 63);
}

#[test]
fn rendering_is_deterministic() {
    let p = calculator();
    assert_eq!(rendered(&p).to_yaml(), rendered(&p).to_yaml());
}
