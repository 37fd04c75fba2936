#!/usr/bin/env python3
"""Checks charts/berth with real tools.

- Helm (the engine embedded in helm-python-sdk) lints the chart and renders it with the
  default values, with every optional feature on, watching one namespace, and with the
  supply-chain values set.
- kubernetes-validate checks every rendered object and both CRDs against the Kubernetes
  1.33 schemas in strict mode.
- The operator's and gateway's RBAC must be exactly tests/chart/operator-rbac.yaml, whose
  resource types are compared with the kube API calls found in the code.
- values.schema.json must turn a wrong value into a render error that names it.
- With --berth-bin, every flag and BERTH_* variable the chart passes must be one that
  `berth operator` / `berth gateway` accept.
- The supply-chain values (pull secrets, trusted keys, signature requirements, registry
  egress) reach the operator's flags, volumes and NetworkPolicy.

Exit status: 0 all good, 1 a check failed, 77 a tool is missing (python module).
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

MISSING = 77
ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "berth"
RBAC_FILE = Path(__file__).resolve().parent / "operator-rbac.yaml"
KUBERNETES_VERSION = "1.33.0"
RELEASE = "berth"
NAMESPACE = "berth-system"

try:
    import helm_python as helm
    import kubernetes_validate
    import yaml
except ImportError as e:  # pragma: no cover - reported to the Rust test
    print(f"missing python module: {e.name} (pip install helm-python-sdk kubernetes-validate)")
    sys.exit(MISSING)

failures: list[str] = []


def fail(message: str) -> None:
    failures.append(message)
    print(f"FAIL {message}")


def ok(message: str) -> None:
    print(f"ok   {message}")


def check(condition: bool, message: str) -> bool:
    if condition:
        ok(message)
    else:
        fail(message)
    return condition


# --- rendering ---------------------------------------------------------------------------

ALL_FEATURES: dict[str, Any] = {
    "image": {"digest": "sha256:" + "0" * 64},
    "autoApproveTier": "moderate",
    "logLevel": "info,berth_operator=debug",
    "operator": {"replicas": 2},
    "gateway": {
        "pluginNamespace": "team-a",
        "egress": {
            "allowPrivate": True,
            "deny": ["10.244.0.0/16", "10.96.0.0/12"],
            "cidrs": [{"cidr": "203.0.113.0/24"}],
        },
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80},
        "podDisruptionBudget": {"enabled": True},
        "auth": {"existingSecret": "team-gateway-tokens", "existingSecretKey": "tokens.txt"},
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": "kubernetes.io/hostname",
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "gateway"}},
            }
        ],
    },
    "serviceMonitor": {"enabled": True, "force": True, "labels": {"release": "prometheus"}},
    "grafanaDashboard": {"enabled": True},
    "kubernetesPermissions": {
        "enabled": True,
        "delegatableRules": [
            {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get", "list", "watch"]}
        ],
    },
    "networkPolicy": {
        "kubeAPIServer": {"cidrs": ["10.96.0.1/32", "172.18.0.2/32"]},
        "gatewayFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "apps"}}}
        ],
        "gatewayExtraEgress": [
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": 443}]}
        ],
        "metricsFrom": [
            {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}
        ],
    },
}

ONE_NAMESPACE: dict[str, Any] = {
    "watchNamespace": "plugins",
    "operator": {"leaderElection": {"enabled": False}},
    "kubernetesPermissions": {"enabled": True, "escalate": True},
    "supplyChain": {"pinDigests": False},
}

# A cosign-style ECDSA P-256 public key (what `berth keygen` writes as cosign.pub).
RELEASE_PUB = """-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE/yj93tRrlLiSKJp8qeoF7Ieg8OPp
Z1wVHLSSlE22GmkPZulRkSCQ8VTIukd6SSgGExszlqokSJkkLLMdAMeJLQ==
-----END PUBLIC KEY-----
"""

SUPPLY_CHAIN: dict[str, Any] = {
    "supplyChain": {
        "resolveIntervalSeconds": 120,
        "pullSecrets": ["registry-pull", "mirror-pull"],
        "insecureRegistries": ["registry.internal:5000"],
        "requireSignatures": ["calculator", "team-*"],
        "trustedKeys": [{"name": "release", "pem": RELEASE_PUB}],
        "existingTrustedKeysConfigMap": "platform-keys",
        "registryEgress": [
            {"to": [{"ipBlock": {"cidr": "203.0.113.10/32"}}], "ports": [{"protocol": "TCP", "port": 443}]}
        ],
    },
}


def render(chart: Any, values: dict[str, Any], api_versions: list[str] | None = None) -> dict[str, str]:
    """Renders like `helm install --dry-run`; api_versions stands in for the cluster's."""
    if api_versions is None:
        return chart.render(values=values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    # Chart.render does not expose the API versions; the library's render options do.
    from helm_python import _native

    options = {
        "name": RELEASE,
        "namespace": NAMESPACE,
        "is_install": True,
        "kube_version": "v" + KUBERNETES_VERSION,
        "api_versions": api_versions,
    }
    raw = _native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(options))
    return json.loads(raw)


def objects_of(manifests: dict[str, str]) -> list[dict[str, Any]]:
    out = []
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                doc["__template"] = path
                out.append(doc)
    return out


def clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k != "__template"}


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    found = find(objects, kind, name)
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}/{name}, found {len(found)}")
    return found[0]


# --- checks -------------------------------------------------------------------------------


def check_lint() -> None:
    for label, values in [("default values", None), ("every feature on", ALL_FEATURES),
                          ("supply chain", SUPPLY_CHAIN)]:
        report = helm.lint(CHART, values, strict=True, kube_version="v" + KUBERNETES_VERSION)
        problems = [m for m in report["messages"] if m["severity"] >= 2] + [
            {"severity": 3, "path": "", "error": e} for e in report.get("errors", [])
        ]
        for p in problems:
            fail(f"helm lint ({label}): {p['path']}: {p['error']}")
        if not problems:
            ok(f"helm lint --strict ({label}): no warnings or errors")


def check_crds(chart: Any) -> None:
    top = {p.name: p.read_bytes() for p in sorted((ROOT / "crds").glob("*.yaml"))}
    ours = {p.name: p.read_bytes() for p in sorted((CHART / "crds").glob("*.yaml"))}
    check(top == ours, "charts/berth/crds/ is byte for byte the top-level crds/")
    loaded = {Path(c["filename"]).name for c in chart.crds}
    check(loaded == set(top), f"Helm loads the chart's CRDs: {sorted(loaded)}")
    for name, data in top.items():
        validate(yaml.safe_load(data), f"crds/{name}")


def validate(obj: dict[str, Any], where: str) -> None:
    kind = obj.get("kind")
    name = obj.get("metadata", {}).get("name")
    try:
        kubernetes_validate.validate(clean(obj), KUBERNETES_VERSION, strict=True)
        ok(f"kubernetes-validate {KUBERNETES_VERSION} --strict: {where}: {kind}/{name}")
    except kubernetes_validate.SchemaNotFoundError as e:
        if obj.get("apiVersion", "").startswith("monitoring.coreos.com/"):
            print(
                f"skip kubernetes-validate: {where}: {kind}/{name}: a Prometheus Operator custom "
                "resource; kubernetes-validate has only Kubernetes' own schemas (checked by hand below)"
            )
        else:
            fail(f"kubernetes-validate: {where}: {e.message}")
    except kubernetes_validate.ValidationError as e:
        path = "/".join(str(p) for p in e.path)
        fail(f"kubernetes-validate: {where}: {kind}/{name}: {path}: {e.message}")


def check_restricted(deployment: dict[str, Any]) -> None:
    """The restricted Pod Security Standard, plus a read-only root filesystem."""
    name = deployment["metadata"]["name"]
    pod = deployment["spec"]["template"]["spec"]
    psc = pod.get("securityContext", {})
    problems = []
    if psc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
        problems.append("pod seccompProfile is not RuntimeDefault")
    for c in pod["containers"] + pod.get("initContainers", []):
        sc = c.get("securityContext", {})
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{c['name']}: runAsNonRoot")
        if (sc.get("runAsUser", psc.get("runAsUser")) or 0) == 0:
            problems.append(f"{c['name']}: runAsUser must not be 0")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{c['name']}: allowPrivilegeEscalation must be false")
        if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
            problems.append(f"{c['name']}: capabilities must drop ALL and add none")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{c['name']}: readOnlyRootFilesystem")
        if sc.get("privileged"):
            problems.append(f"{c['name']}: privileged")
        if "livenessProbe" not in c or "readinessProbe" not in c:
            problems.append(f"{c['name']}: liveness and readiness probes")
        if not c.get("resources", {}).get("requests") or not c.get("resources", {}).get("limits"):
            problems.append(f"{c['name']}: resource requests and limits")
    for v in pod.get("volumes", []):
        if "hostPath" in v:
            problems.append(f"volume {v['name']} is a hostPath")
    if pod.get("hostNetwork") or pod.get("hostPID") or pod.get("hostIPC"):
        problems.append("host namespaces")
    check(not problems, f"Deployment/{name} meets the restricted Pod Security Standard {problems or ''}")


def args_of(deployment: dict[str, Any]) -> list[str]:
    return deployment["spec"]["template"]["spec"]["containers"][0]["args"]


def arg_value(args: list[str], flag: str) -> str | None:
    for a in args:
        if a.startswith(flag + "="):
            return a.split("=", 1)[1]
    return None


def arg_values(args: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in args if a.startswith(flag + "=")]


def check_defaults(objects: list[dict[str, Any]]) -> None:
    for o in objects:
        validate(o, o["__template"])
    operator = one(objects, "Deployment", "berth-operator")
    gateway = one(objects, "Deployment", "berth-gateway")
    for d in (operator, gateway):
        check_restricted(d)
    check(operator["spec"]["replicas"] == 1, "operator: one replica by default")
    op_args = args_of(operator)
    check(op_args[0] == "operator" and args_of(gateway)[0] == "gateway",
          "both Deployments run the berth image with the subcommand as first argument")
    check(arg_value(op_args, "--leader-elect") == "true", "operator: leader election on by default")
    check(arg_value(op_args, "--auto-approve-tier") == "low", "operator: auto-approve tier low by default")
    check(arg_value(op_args, "--namespace") is None, "operator: watches every namespace by default")
    check(arg_value(op_args, "--pin-digests") == "true" and arg_value(op_args, "--resolve-interval-seconds") == "300",
          "operator: plugin images pinned to digests by default, tags resolved again every 300 s")
    check(not arg_values(op_args, "--image-pull-secret") and not arg_values(op_args, "--require-signature")
          and not arg_values(op_args, "--signed-plugins"),
          "operator: no pull secret, trusted key or signature requirement by default")
    op_policy = one(objects, "NetworkPolicy", "berth-operator")
    registry_ports = {p.get("port") for r in op_policy["spec"]["egress"] if not r.get("to")
                      for p in r.get("ports", [])}
    check({443, 5000} <= registry_ports, f"operator NetworkPolicy lets it reach registries on 443 and 5000: {sorted(map(str, registry_ports))}")
    gateway_pod_labels = gateway["spec"]["template"]["metadata"]["labels"]
    selector = dict(p.split("=", 1) for p in arg_value(op_args, "--gateway-selector").split(","))
    check(all(gateway_pod_labels.get(k) == v for k, v in selector.items()),
          f"operator --gateway-selector {selector} selects the gateway pods (plugin NetworkPolicies admit them)")
    service = one(objects, "Service", "berth-gateway")
    url = f"http://berth-gateway.{NAMESPACE}.svc:{service['spec']['ports'][0]['port']}"
    check(arg_value(op_args, "--gateway-url") == url, f"operator --gateway-url is the gateway Service: {url}")
    check(arg_value(op_args, "--gateway-port") == str(
        gateway["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"]),
        "operator --gateway-port is the gateway container port")
    gw_args = args_of(gateway)
    check(arg_value(gw_args, "--backend") == "kubernetes" and arg_value(gw_args, "--namespace") == "default",
          "gateway: kubernetes backend serving namespace default by default")
    check(arg_value(gw_args, "--auto-approve-tier") == arg_value(op_args, "--auto-approve-tier"),
          "gateway and operator agree on the auto-approve tier")
    check(not find(objects, "HorizontalPodAutoscaler") and not find(objects, "PodDisruptionBudget"),
          "no HPA or PDB by default")
    check(not find(objects, "ServiceMonitor"), "no ServiceMonitor by default")
    check(not find(objects, "ConfigMap"), "no dashboard ConfigMap by default")
    secret = one(objects, "Secret", "berth-gateway-tokens")
    check_generated_tokens(secret, one(objects, "Secret", "berth-bench-token"))
    volume = [v for v in gateway["spec"]["template"]["spec"]["volumes"] if v["name"] == "tokens"][0]
    check(volume["secret"]["secretName"] == "berth-gateway-tokens", "gateway mounts the generated tokens Secret")
    policies = {p["metadata"]["name"] for p in find(objects, "NetworkPolicy")}
    check(policies == {"berth-operator", "berth-gateway"}, f"NetworkPolicies for operator and gateway: {sorted(policies)}")
    gw_policy = one(objects, "NetworkPolicy", "berth-gateway")
    check(any(
        any(peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "plugin"
            for peer in rule.get("to", []))
        for rule in gw_policy["spec"]["egress"]), "gateway NetworkPolicy lets it reach plugin pods")
    for sa in find(objects, "ServiceAccount"):
        check(sa["metadata"]["namespace"] == NAMESPACE, f"ServiceAccount/{sa['metadata']['name']} in the release namespace")
    check_egress_proxy(objects)


def check_egress_proxy(objects: list[dict[str, Any]]) -> None:
    operator = one(objects, "Deployment", "berth-operator")
    gateway = one(objects, "Deployment", "berth-gateway")
    gw_args = args_of(gateway)
    check(arg_value(gw_args, "--egress-listen") == "0.0.0.0:7401", "gateway serves the egress proxy on 7401")
    check("--egress-allow-private" not in gw_args and arg_value(gw_args, "--egress-deny") is None,
          "gateway: no private ranges and no extra deny networks by default")
    ports = {p["name"]: p["containerPort"] for p in gateway["spec"]["template"]["spec"]["containers"][0]["ports"]}
    check(ports.get("egress") == 7401, "gateway container port named egress")
    service = one(objects, "Service", "berth-gateway")
    svc_ports = {p["name"]: p for p in service["spec"]["ports"]}
    check(svc_ports.get("egress", {}).get("port") == 7401 and svc_ports["egress"]["targetPort"] == "egress",
          "gateway Service exposes the proxy as port egress")
    op_args = args_of(operator)
    proxy = f"berth-gateway.{NAMESPACE}.svc:7401"
    check(arg_value(op_args, "--egress-proxy") == proxy, f"operator --egress-proxy is the gateway Service: {proxy}")
    check(arg_value(op_args, "--egress-proxy-port") == "7401", "operator --egress-proxy-port is the proxy's container port")
    policy = one(objects, "NetworkPolicy", "berth-gateway")
    proxy_ingress = [r for r in policy["spec"]["ingress"]
                     if any(p.get("port") == "egress" for p in r.get("ports", []))]
    check(len(proxy_ingress) == 1 and all(
        peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component") == "plugin"
        for peer in proxy_ingress[0].get("from", [])) and proxy_ingress[0].get("from"),
        "gateway NetworkPolicy admits only plugin pods to the egress proxy")
    blocks = [peer["ipBlock"] for r in policy["spec"]["egress"] for peer in r.get("to", []) if "ipBlock" in peer]
    v4 = [b for b in blocks if b["cidr"] == "0.0.0.0/0"]
    check(len(v4) == 1 and "10.0.0.0/8" in v4[0].get("except", []) and "169.254.0.0/16" in v4[0]["except"],
          "gateway egress for the proxy: public addresses, private and link-local ranges excepted")


def check_generated_tokens(secret: dict[str, Any], bench_secret: dict[str, Any]) -> None:
    import base64
    import hashlib

    token = base64.b64decode(secret["data"]["token"]).decode()
    lines = base64.b64decode(secret["data"]["tokens"]).decode().splitlines()
    fields = lines[0].split()
    check(len(token) >= 32, "generated gateway token has at least 32 characters")
    check(len(fields) == 3 and fields[1] == "sha256:" + hashlib.sha256(token.encode()).hexdigest(),
          f"generated tokens file holds the token's SHA-256 only: {fields[0]} sha256:… {fields[2]}")
    bench = base64.b64decode(bench_secret["data"]["token"]).decode()
    bench_fields = lines[1].split() if len(lines) == 2 else []
    check(len(bench) >= 32 and bench != token
          and bench_fields == ["bench", "sha256:" + hashlib.sha256(bench.encode()).hexdigest(), "invoke:*"],
          "the benchmark token is a second, invoke-only line of the tokens file")
    check(bench_secret["metadata"]["namespace"] == "default" and list(bench_secret["data"]) == ["token"],
          "the benchmark token's Secret is berth-bench-token in the served namespace, holding only the token")


def check_all_features(objects: list[dict[str, Any]], dashboard_json: str) -> None:
    for o in objects:
        validate(o, o["__template"])
    for d in find(objects, "Deployment"):
        check_restricted(d)
    operator = one(objects, "Deployment", "berth-operator")
    check(operator["spec"]["replicas"] == 2, "operator replicas from values")
    check(arg_value(args_of(operator), "--bench-image") == operator["spec"]["template"]["spec"]["containers"][0]["image"]
          and "@sha256:" in arg_value(args_of(operator), "--bench-image"),
          "PluginBenchmark Jobs run the operator's own (pinned) image")
    gateway = one(objects, "Deployment", "berth-gateway")
    check("replicas" not in gateway["spec"], "gateway replicas left to the HPA when autoscaling is on")
    hpa = one(objects, "HorizontalPodAutoscaler", "berth-gateway")
    check(hpa["spec"]["scaleTargetRef"]["name"] == "berth-gateway" and len(hpa["spec"]["metrics"]) == 2,
          "HPA scales the gateway on CPU and memory")
    pdb = one(objects, "PodDisruptionBudget", "berth-gateway")
    check(pdb["spec"]["selector"]["matchLabels"] == gateway["spec"]["selector"]["matchLabels"],
          "PDB selects the gateway pods")
    check(not find(objects, "Secret"), "no generated Secret when gateway.auth.existingSecret is set")
    spec = gateway["spec"]["template"]["spec"]
    volume = [v for v in spec["volumes"] if v["name"] == "tokens"][0]
    check(volume["secret"]["secretName"] == "team-gateway-tokens"
          and volume["secret"]["items"][0]["key"] == "tokens.txt", "gateway mounts the existing tokens Secret")
    check(arg_value(spec["containers"][0]["args"], "--tokens-file") == "/etc/berth/tokens/tokens.txt",
          "gateway --tokens-file points at the existing Secret's key")
    check(spec["containers"][0]["image"] == "berth/berth@sha256:" + "0" * 64, "image pinned by digest")
    check(arg_value(spec["containers"][0]["args"], "--namespace") == "team-a"
          and arg_value(spec["containers"][0]["args"], "--auto-approve-tier") == "moderate",
          "gateway serves gateway.pluginNamespace with the operator's auto-approve tier")
    monitors = find(objects, "ServiceMonitor")
    check(len(monitors) == 2, "ServiceMonitors for gateway and operator when forced")
    services = {s["metadata"]["name"]: s for s in find(objects, "Service")}
    for m in monitors:
        selected = [s for s in services.values()
                    if all(s["metadata"]["labels"].get(k) == v for k, v in m["spec"]["selector"]["matchLabels"].items())]
        ports = {p["name"] for s in selected for p in s["spec"]["ports"]}
        check(len(selected) == 1 and all(e["port"] in ports for e in m["spec"]["endpoints"])
              and m["metadata"]["labels"].get("release") == "prometheus",
              f"ServiceMonitor/{m['metadata']['name']} selects one Service and names its port")
    cm = one(objects, "ConfigMap", "berth-dashboard")
    check(cm["metadata"]["labels"].get("grafana_dashboard") == "1", "dashboard ConfigMap has grafana_dashboard: \"1\"")
    check(json.loads(cm["data"]["berth.json"]) == json.loads(dashboard_json),
          "dashboard ConfigMap carries docs/grafana-dashboard.json")
    for p in find(objects, "NetworkPolicy"):
        rules = p["spec"]["egress"]
        api = [r for r in rules if any(port.get("port") == 6443 for port in r.get("ports", []))]
        check(api and all(r.get("to") for r in api), f"NetworkPolicy/{p['metadata']['name']}: API server egress narrowed to the given CIDRs")
    gw_policy = one(objects, "NetworkPolicy", "berth-gateway")
    peers = gw_policy["spec"]["ingress"][0].get("from", [])
    components = [peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/component")
                  for peer in peers]
    check(len(peers) == 3 and components[:2] == ["plugin", "benchmark"],
          "gateway ingress: plugins, PluginBenchmark Jobs and the given peers when gatewayFrom is set")
    gw_args = spec["containers"][0]["args"]
    check("--write-live-tiers=true" in gw_args, "the gateway writes live tiers when the chart gives it RBAC")
    check("--egress-allow-private" in gw_args and arg_value(gw_args, "--egress-deny") == "10.244.0.0/16,10.96.0.0/12",
          "gateway.egress.allowPrivate and gateway.egress.deny reach the proxy's flags")
    blocks = [peer["ipBlock"] for r in gw_policy["spec"]["egress"] for peer in r.get("to", []) if "ipBlock" in peer]
    check({"cidr": "203.0.113.0/24"} in blocks, "gateway.egress.cidrs become the gateway's egress IPBlocks")


def check_supply_chain(objects: list[dict[str, Any]]) -> None:
    for o in objects:
        validate(o, o["__template"])
    operator = one(objects, "Deployment", "berth-operator")
    check_restricted(operator)
    args = args_of(operator)
    check(arg_value(args, "--pin-digests") == "true" and arg_value(args, "--resolve-interval-seconds") == "120",
          "operator: supplyChain.pinDigests and resolveIntervalSeconds reach its flags")
    check(arg_values(args, "--image-pull-secret") == ["registry-pull", "mirror-pull"],
          "operator: one --image-pull-secret per supplyChain.pullSecrets entry")
    check(arg_values(args, "--insecure-registry") == ["registry.internal:5000"],
          "operator: supplyChain.insecureRegistries become --insecure-registry")
    check(arg_values(args, "--signed-plugins") == ["calculator", "team-*"],
          "operator: supplyChain.requireSignatures become --signed-plugins")
    key_dirs = arg_values(args, "--require-signature")
    pod = operator["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    check(key_dirs == ["/etc/berth/trusted-keys/chart", "/etc/berth/trusted-keys/existing"]
          and mounts.get("trusted-keys", {}).get("mountPath") == key_dirs[0]
          and mounts.get("existing-trusted-keys", {}).get("mountPath") == key_dirs[1]
          and all(mounts[n].get("readOnly") for n in ("trusted-keys", "existing-trusted-keys")),
          f"operator: each --require-signature key directory is a read-only mount: {key_dirs}")
    check(volumes.get("trusted-keys", {}).get("configMap", {}).get("name") == "berth-operator-trusted-keys"
          and volumes.get("existing-trusted-keys", {}).get("configMap", {}).get("name") == "platform-keys",
          "operator: the chart's key ConfigMap and supplyChain.existingTrustedKeysConfigMap are mounted")
    keys = one(objects, "ConfigMap", "berth-operator-trusted-keys")
    check(keys["data"] == {"release.pub": RELEASE_PUB},
          "the trusted-keys ConfigMap holds each key as NAME.pub, verbatim")
    annotations = operator["spec"]["template"]["metadata"].get("annotations", {})
    check(len(annotations.get("checksum/trusted-keys", "")) == 64,
          "operator pods carry a checksum of the trusted keys, so new keys restart it")
    policy = one(objects, "NetworkPolicy", "berth-operator")
    check(SUPPLY_CHAIN["supplyChain"]["registryEgress"][0] in policy["spec"]["egress"],
          "operator NetworkPolicy carries supplyChain.registryEgress")


def check_one_namespace(objects: list[dict[str, Any]]) -> None:
    for o in objects:
        validate(o, o["__template"])
    operator = one(objects, "Deployment", "berth-operator")
    op_args = args_of(operator)
    check(arg_value(op_args, "--pin-digests") == "false" and arg_value(op_args, "--resolve-interval-seconds") is None,
          "operator: supplyChain.pinDigests false turns resolution off")
    op_policy = one(objects, "NetworkPolicy", "berth-operator")
    check(not any(p.get("port") == 5000 for r in op_policy["spec"]["egress"] for p in r.get("ports", [])),
          "operator NetworkPolicy: no registry egress while digests are not resolved")
    check(arg_value(args_of(operator), "--namespace") == "plugins", "operator --namespace from watchNamespace")
    check(arg_value(args_of(operator), "--leader-elect") == "false", "leader election can be turned off")
    check(operator["spec"]["strategy"]["type"] == "Recreate", "without leader election the operator is never doubled")
    check(not find(objects, "Role", "berth-operator-leader-election"), "no Lease Role without leader election")
    check(arg_value(args_of(one(objects, "Deployment", "berth-gateway")), "--namespace") == "plugins",
          "gateway serves the watched namespace")
    role_namespaces = {r["metadata"]["namespace"] for r in find(objects, "Role")}
    check(role_namespaces == {"plugins"}, f"Roles only in the watched namespace: {sorted(role_namespaces)}")


def check_service_monitor_capability(chart: Any) -> None:
    values = {"serviceMonitor": {"enabled": True}}
    without = objects_of(render(chart, values, api_versions=[]))
    check(not find(without, "ServiceMonitor"),
          "serviceMonitor.enabled alone renders nothing when monitoring.coreos.com/v1 is absent")
    notes = render(chart, values, api_versions=[]).get("berth/templates/NOTES.txt", "")
    check("monitoring.coreos.com/v1" in notes, "NOTES.txt warns that the ServiceMonitor was skipped")
    with_api = objects_of(render(chart, values, api_versions=["monitoring.coreos.com/v1"]))
    check(len(find(with_api, "ServiceMonitor")) == 2, "ServiceMonitors rendered when the cluster serves monitoring.coreos.com/v1")


def check_schema(chart: Any) -> None:
    cases = [
        ({"operator": {"replicas": "two"}}, ["operator", "replicas"]),
        ({"autoApproveTier": "extreme"}, ["autoApproveTier"]),
        ({"gateway": {"replica": 3}}, ["replica"]),
        ({"image": {"digest": "latest"}}, ["digest"]),
        ({"gateway": {"service": {"port": 70000}}}, ["port"]),
        ({"kubernetesPermissions": {"enabled": "yes"}}, ["enabled"]),
        ({"gateway": {"egress": {"deny": ["not a cidr"]}}}, ["deny"]),
        ({"gateway": {"egress": {"cidrs": [{"cidr": "0.0.0.0/0", "exclude": []}]}}}, ["exclude"]),
        ({"supplyChain": {"pullSecrets": ["Registry_Pull"]}}, ["pullSecrets"]),
        ({"supplyChain": {"trustedKeys": [{"name": "release"}]}}, ["pem"]),
        ({"supplyChain": {"trustedKeys": [{"name": "release", "pem": "not a key"}]}}, ["pem"]),
        ({"supplyChain": {"requireSignatures": ["a*b"]}}, ["requireSignatures"]),
        ({"supplyChain": {"pinDigest": True}}, ["pinDigest"]),
        ({"supplyChain": {"resolveIntervalSeconds": 1}}, ["resolveIntervalSeconds"]),
    ]
    for values, words in [
        ({"supplyChain": {"pinDigests": False, "trustedKeys": [{"name": "release", "pem": RELEASE_PUB}]}},
         ["supplyChain.trustedKeys", "supplyChain.pinDigests"]),
        ({"supplyChain": {"pinDigests": False, "existingTrustedKeysConfigMap": "platform-keys"}},
         ["existingTrustedKeysConfigMap", "supplyChain.pinDigests"]),
    ]:
        try:
            render(chart, values)
        except helm.HelmError as e:
            message = str(e)
            check(all(w in message for w in words),
                  f"the chart refuses {json.dumps(values)[:80]}…: {message.strip().splitlines()[-1].strip()}")
        else:
            fail(f"the chart accepted {json.dumps(values)}")
    try:
        render(chart, {"watchNamespace": "plugins", "gateway": {"pluginNamespace": "other"}})
    except helm.HelmError as e:
        check("must be watchNamespace" in str(e),
              f"a gateway namespace the operator does not watch fails: {str(e).strip().splitlines()[-1].strip()}")
    else:
        fail("gateway.pluginNamespace outside watchNamespace was accepted")
    for values, words in cases:
        try:
            render(chart, values)
        except helm.HelmError as e:
            message = str(e)
            check(all(w in message for w in words),
                  f"values.schema.json rejects {json.dumps(values)}: {message.strip().splitlines()[-1].strip()}")
        else:
            fail(f"values.schema.json accepted {json.dumps(values)}")


# --- RBAC ----------------------------------------------------------------------------------


def rbac_grants(objects: list[dict[str, Any]], service_account: str) -> set[tuple[str, str, str, str, str]]:
    """(where, group, resource, name, verb) granted to a ServiceAccount; where is 'cluster' or a namespace."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o
             for o in objects if o["kind"] in ("Role", "ClusterRole")}
    out = set()
    for b in objects:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        if not any(s["kind"] == "ServiceAccount" and s["name"] == service_account and s.get("namespace") == NAMESPACE
                   for s in b["subjects"]):
            continue
        ref = b["roleRef"]
        role_ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        role = roles.get((ref["kind"], role_ns, ref["name"]))
        if role is None:
            fail(f"{b['kind']}/{b['metadata']['name']} refers to a missing {ref['kind']} {ref['name']}")
            continue
        where = "cluster" if b["kind"] == "ClusterRoleBinding" else b["metadata"]["namespace"]
        for rule in role.get("rules", []):
            for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                if "*" in rule.get(field, []):
                    fail(f"{role['kind']}/{role['metadata']['name']} uses a wildcard in {field}")
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        for n in rule.get("resourceNames", ["*"]):
                            out.add((where, g, r, n, v))
    return out


def expected_grants(component: str, rbac: dict[str, Any], values: dict[str, Any]) -> set[tuple[str, str, str, str, str]]:
    watch = values.get("watchNamespace") or ""
    kube_permissions = values.get("kubernetesPermissions", {}).get("enabled", False)
    leader = values.get("operator", {}).get("leaderElection", {}).get("enabled", True)
    out = set()
    for rule in rbac[component]:
        when = rule.get("when")
        if when == "kubernetesPermissions" and not kube_permissions:
            continue
        if when == "leaderElection" and not leader:
            continue
        if when == "kubernetesPermissionsEscalate" and not (
                kube_permissions and values["kubernetesPermissions"].get("escalate")):
            continue
        scope = rule["scope"]
        served = values.get("gateway", {}).get("pluginNamespace") or watch or "default"
        where = {"watched": watch or "cluster", "cluster": "cluster", "release": NAMESPACE, "served": served}[scope]
        name = RELEASE + "-operator" if rule.get("name") == "lease" else rule.get("name", "*")
        for v in rule["verbs"]:
            out.add((where, rule["group"], rule["resource"], name, v))
    if component == "operator" and kube_permissions:
        for rule in values["kubernetesPermissions"].get("delegatableRules", []):
            for g in rule["apiGroups"]:
                for r in rule["resources"]:
                    for v in rule["verbs"]:
                        for n in rule.get("resourceNames", ["*"]):
                            out.add((watch or "cluster", g, r, n, v))
    return out


def check_rbac(label: str, objects: list[dict[str, Any]], values: dict[str, Any], rbac: dict[str, Any]) -> None:
    for component in ("operator", "gateway"):
        granted = rbac_grants(objects, f"{RELEASE}-{component}")
        expected = expected_grants(component, rbac, values)
        missing = sorted(expected - granted)
        extra = sorted(granted - expected)
        check(not missing, f"RBAC ({label}): {component} is granted every call it makes {missing or ''}")
        check(not extra, f"RBAC ({label}): {component} is granted nothing beyond its calls {extra or ''}")
    gateway_writes = {(g, r, n, v) for (_, g, r, n, v) in rbac_grants(objects, f"{RELEASE}-gateway")
                      if v not in ("get", "list", "watch")}
    check(gateway_writes <= {("berth.dev", "plugins/status", "*", "patch"),
                             ("coordination.k8s.io", "leases", "*", "create"),
                             ("coordination.k8s.io", "leases", "berth-gateway-live-tier", "update")},
          f"RBAC ({label}): the gateway only reads, but for the status of Plugins and its own live-tier Lease "
          f"({sorted(gateway_writes)})")


def rust_sources(directory: Path) -> dict[Path, str]:
    """Non-test Rust sources: test files and `#[cfg(test)]` tails are left out."""
    paths = [directory] if directory.is_file() else sorted(directory.rglob("*.rs"))
    out = {}
    for path in paths:
        if path.name in ("tests.rs", "fixtures.rs", "scenarios.rs", "bench_scenarios.rs") or "tests" in path.parts[len(directory.parts):-1]:
            continue
        text = path.read_text()
        cut = text.find("#[cfg(test)]")
        out[path] = text if cut < 0 else text[:cut]
    return out


TYPE_USE = re.compile(r"(?:\bApi\s*<\s*|::\s*<\s*)([A-Z][A-Za-z0-9]+)\s*>")


def component_sources(rbac: dict[str, Any], component: str) -> dict[Path, str]:
    spec = rbac["sources"][component]
    sources: dict[Path, str] = {}
    for include in spec["include"]:
        sources.update(rust_sources(ROOT / include))
    for exclude in spec.get("exclude", []):
        for path in list(sources):
            if path == ROOT / exclude or (ROOT / exclude) in path.parents:
                del sources[path]
    return sources


def check_rbac_covers_code(rbac: dict[str, Any], component: str) -> None:
    """Every resource type the component calls has a rule, and every rule a call."""
    sources = component_sources(rbac, component)
    if not sources:
        fail(f"no sources found for {component}: {rbac['sources'][component]}")
        return
    used: dict[str, set[str]] = {}
    for path, text in sources.items():
        for m in TYPE_USE.finditer(text):
            used.setdefault(m.group(1), set()).add(str(path.relative_to(ROOT)))
        if re.search(r"\bRecorder::new\b", text):
            used.setdefault("Recorder", set()).add(str(path.relative_to(ROOT)))
    types = rbac["types"]
    ruled = {f"{r['group']}/{r['resource'].split('/')[0]}" for r in rbac[component]}
    found = set()
    for type_name, files in sorted(used.items()):
        resource = types.get(type_name)
        if resource is None:
            # Not every type parameter is an API resource (Vec<T>, Option<T>…): only those
            # that sit in an Api<…> or a `::<T>(client` call count.
            if any(re.search(rf"\bApi\s*<\s*{type_name}\s*>|::<\s*{type_name}\s*>\s*\(\s*&?\s*(ctx\.)?client",
                             sources[ROOT / f]) for f in files):
                fail(f"{component} calls the API for {type_name} ({', '.join(sorted(files))}) but "
                     f"tests/chart/operator-rbac.yaml has no type mapping or rule for it")
            continue
        found.add(resource)
        check(resource in ruled,
              f"{component} code uses {type_name} ({resource}; {', '.join(sorted(files))}) and the RBAC list has a rule for it")
    for resource in sorted(ruled - found):
        fail(f"tests/chart/operator-rbac.yaml grants {component} {resource} but no call to it was found in its code")


# --- flags -----------------------------------------------------------------------------------


def check_flags(berth: str, objects: list[dict[str, Any]]) -> None:
    code = "\n".join(t for d in ("crates/cli/src", "operator/src", "crates/gateway/src")
                     for t in rust_sources(ROOT / d).values())
    for component in ("operator", "gateway"):
        run = subprocess.run([berth, component, "--help"], capture_output=True, text=True)
        if run.returncode != 0:
            fail(f"`berth {component} --help` failed: {run.stderr.strip()}")
            continue
        accepted = set(re.findall(r"--([a-z0-9][a-z0-9-]*)", run.stdout))
        envs = set(re.findall(r"\[env: ([A-Z0-9_]+)=", run.stdout))
        for d in find(objects, "Deployment", f"{RELEASE}-{component}"):
            container = d["spec"]["template"]["spec"]["containers"][0]
            flags = [a.split("=", 1)[0][2:] for a in container["args"] if a.startswith("--")]
            unknown = [f for f in flags if f not in accepted]
            check(not unknown, f"every flag the chart gives `berth {component}` is accepted: {unknown or flags}")
            # clap parses every value before it honours a trailing --help, so this parses the
            # chart's arguments exactly as the container would, without starting anything.
            parsed = subprocess.run([berth, *container["args"], "--help"], capture_output=True, text=True)
            check(parsed.returncode == 0,
                  f"`berth {' '.join(container['args'])}` parses {parsed.stderr.strip().splitlines()[:1] or ''}")
            for env in container.get("env", []):
                name = env["name"]
                check(name in envs or f'"{name}"' in code,
                      f"`berth {component}` reads {name} (clap env or code)")


# --- main ------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--berth-bin", help="the berth binary, to check the chart's flags")
    args = parser.parse_args()

    print(f"helm {helm.helm_sdk_version()} (helm-python-sdk {helm.__version__}), "
          f"kubernetes-validate {kubernetes_validate.__version__} against Kubernetes {KUBERNETES_VERSION}")
    rbac = yaml.safe_load(RBAC_FILE.read_text())
    dashboard = (ROOT / "docs" / "grafana-dashboard.json").read_text()
    check((CHART / "dashboards" / "berth.json").read_text() == dashboard,
          "charts/berth/dashboards/berth.json is docs/grafana-dashboard.json")

    chart = helm.Chart.load(CHART)
    check_lint()
    check_crds(chart)

    scenarios: list[tuple[str, dict[str, Any], Callable[[list[dict[str, Any]]], None]]] = [
        ("default values", {}, check_defaults),
        ("every feature on", ALL_FEATURES, lambda o: check_all_features(o, dashboard)),
        ("one watched namespace", ONE_NAMESPACE, check_one_namespace),
        ("supply chain", SUPPLY_CHAIN, check_supply_chain),
    ]
    rendered = {}
    for label, values, checks in scenarios:
        print(f"--- render: {label}")
        try:
            objects = objects_of(render(chart, copy.deepcopy(values)))
        except helm.HelmError as e:
            fail(f"render ({label}): {e}")
            continue
        ok(f"render ({label}): {len(objects)} objects")
        rendered[label] = objects
        try:
            checks(objects)
        except (AssertionError, KeyError, IndexError, TypeError) as e:
            fail(f"render ({label}): {type(e).__name__}: {e}")
        check_rbac(label, objects, values, rbac)

    print("--- ServiceMonitor and the cluster's API versions")
    check_service_monitor_capability(chart)
    print("--- values.schema.json")
    check_schema(chart)
    print("--- RBAC against the code")
    for component in ("operator", "gateway"):
        check_rbac_covers_code(rbac, component)
    if args.berth_bin:
        print(f"--- flags against {args.berth_bin}")
        for label in ("default values", "every feature on", "one watched namespace", "supply chain"):
            if label in rendered:
                check_flags(args.berth_bin, rendered[label])

    if failures:
        print(f"\n{len(failures)} check(s) failed:")
        for f in failures:
            print(f"  - {f}")
        return 1
    print("\nall chart checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
