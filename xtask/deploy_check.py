#!/usr/bin/env python3
"""Checks the deployment files where no Docker engine and no Kubernetes run.

`cargo xtask test` runs it. It renders the Helm chart in both Redis modes with the Helm
library (helm-python-sdk), lints it, validates every manifest against the Kubernetes
schemas (kubernetes-validate --strict), and checks what the manifests must say; it
validates the Compose files with `docker-compose config`; and it checks the Dockerfile's
final stage. Images are not built and nothing is deployed: docs/deployment.md says so.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import helm_python
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CHART = os.path.join(ROOT, "charts", "tideway")
KUBE_VERSION = "1.30.0"
# A token secret the gateway takes (32 bytes or more).
SECRET = "0123456789abcdef0123456789abcdef"
failures: list[str] = []


def check(condition: bool, what: str) -> None:
    if not condition:
        failures.append(what)


def render(values: dict) -> list[dict]:
    chart = helm_python.Chart.load(CHART)
    try:
        rendered = chart.render(values, name="tw", namespace="gateways")
    finally:
        chart.close()
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return docs


# Kinds of CRDs, which the Kubernetes schemas do not hold; checked by shape here instead.
CUSTOM_KINDS = {"ServiceMonitor"}


# The validator installed beside this Python (xtask's `target/venv`), whether or not that
# environment's `bin` is on PATH.
KUBERNETES_VALIDATE = (
    shutil.which("kubernetes-validate", path=os.path.dirname(sys.executable)) or "kubernetes-validate"
)


def validate(docs: list[dict], label: str) -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as out:
        yaml.safe_dump_all([d for d in docs if d["kind"] not in CUSTOM_KINDS], out)
    result = subprocess.run(
        [KUBERNETES_VALIDATE, "--strict", "--quiet", "-k", KUBE_VERSION, out.name],
        capture_output=True,
        text=True,
    )
    check(result.returncode == 0, f"{label}: kubernetes-validate failed:\n{result.stdout}{result.stderr}")
    os.unlink(out.name)


def kinds(docs: list[dict]) -> dict[str, list[dict]]:
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def seconds(text: str) -> int:
    return int(text.rstrip("s"))


def check_gateway(docs: list[dict], label: str, redis_url: str) -> None:
    by_kind = kinds(docs)
    deployment = by_kind["Deployment"][0]
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    check(spec["replicas"] == 3, f"{label}: 3 replicas")
    check(env["TIDEWAY_NODE_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name", f"{label}: node id from the pod name")
    check(env["TIDEWAY_ADVERTISE_HOST"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP", f"{label}: advertised host from the pod IP")
    check(env["TIDEWAY_ADAPTER"]["value"] == "redis", f"{label}: Redis adapter")
    check(env["REDIS_URL"]["value"] == redis_url, f"{label}: REDIS_URL is {redis_url}, got {env['REDIS_URL']}")
    check("secretKeyRef" in env["SSE_PUBLISHER_API_KEYS"]["valueFrom"], f"{label}: API keys from a Secret")
    check("secretKeyRef" in env["TIDEWAY_TOKEN_SECRET"]["valueFrom"], f"{label}: one token secret for every replica")
    check(container["readinessProbe"]["httpGet"]["path"] == "/readyz", f"{label}: readiness on /readyz")
    check(container["livenessProbe"]["httpGet"]["path"] == "/healthz", f"{label}: liveness on /healthz")
    check(
        pod["terminationGracePeriodSeconds"] > seconds(env["TIDEWAY_DRAIN_TIMEOUT"]["value"]),
        f"{label}: the grace period outlasts the drain",
    )
    check(pod["securityContext"]["runAsNonRoot"] is True, f"{label}: non-root")
    check("requests" in container["resources"], f"{label}: resource requests")
    check(len(by_kind.get("PodDisruptionBudget", [])) == 1, f"{label}: a PodDisruptionBudget")
    check(by_kind["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["image"] == "tideway:0.1.0", f"{label}: the image tag is the chart's appVersion")


def check_chart() -> None:
    report = helm_python.lint(CHART, {"apiKeys": {"keys": ["k"], "tokenSecret": SECRET}}, strict=True, kube_version=f"v{KUBE_VERSION}")
    problems = [m for m in report["messages"] if m["severity"] >= 2] + report["errors"]
    check(not problems, f"helm lint: {problems}")

    built_in = render({"apiKeys": {"keys": ["key-1", "key-2"], "tokenSecret": SECRET}})
    validate(built_in, "built-in Redis")
    check_gateway(built_in, "built-in Redis", "redis://tw-tideway-redis:6379")
    by_kind = kinds(built_in)
    check(len(by_kind.get("StatefulSet", [])) == 1, "built-in Redis: a Redis StatefulSet")
    secret = by_kind.get("Secret", [{}])[0]
    check(secret.get("stringData", {}).get("api-keys") == "key-1,key-2", "built-in Redis: the Secret joins the keys")
    check(secret.get("stringData", {}).get("token-secret") == SECRET, "built-in Redis: the Secret holds the token secret")
    check("Ingress" not in by_kind, "built-in Redis: no Ingress unless enabled")

    external = render({
        "redis": {"enabled": False, "url": "redis://redis.example:6379"},
        "apiKeys": {"existingSecret": "my-keys"},
        "ingress": {"enabled": True, "tls": [{"secretName": "tls", "hosts": ["tideway.example.com"]}]},
    })
    validate(external, "external Redis")
    check_gateway(external, "external Redis", "redis://redis.example:6379")
    by_kind = kinds(external)
    check("StatefulSet" not in by_kind, "external Redis: no StatefulSet")
    check("Secret" not in by_kind, "external Redis: the existing Secret is used")
    annotations = by_kind["Ingress"][0]["metadata"]["annotations"]
    check(annotations.get("nginx.ingress.kubernetes.io/proxy-buffering") == "off", "Ingress: no buffering")

    seeds = "redis://rc-0.rc:6379,redis://rc-1.rc:6379,redis://rc-2.rc:6379"
    cluster = render({
        "redis": {"enabled": False, "cluster": True, "url": seeds},
        "apiKeys": {"keys": ["k"], "tokenSecret": SECRET},
    })
    validate(cluster, "Redis Cluster")
    check_gateway(cluster, "Redis Cluster", seeds)
    env = {e["name"]: e for e in kinds(cluster)["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}
    check(env.get("TIDEWAY_REDIS_CLUSTER", {}).get("value") == "true", "Redis Cluster: TIDEWAY_REDIS_CLUSTER is set")
    check("StatefulSet" not in kinds(cluster), "Redis Cluster: no built-in Redis")
    check("TIDEWAY_REDIS_CLUSTER" not in {e["name"] for e in kinds(built_in)["Deployment"][0]["spec"]["template"]["spec"]["containers"][0]["env"]}, "built-in Redis: not in cluster mode")

    # Defaults: installs as it is, a key and a token secret made for it.
    defaults = render({})
    validate(defaults, "defaults")
    check_gateway(defaults, "defaults", "redis://tw-tideway-redis:6379")
    made = kinds(defaults)["Secret"][0]["stringData"]
    check(made["api-keys"].startswith("tw_") and len(made["api-keys"]) == 35, "defaults: an API key is made")
    check(len(made["token-secret"]) >= 32, "defaults: a token secret of 32 bytes or more is made")
    pod = kinds(defaults)["Deployment"][0]["spec"]["template"]["spec"]
    check(pod["containers"][0]["lifecycle"]["preStop"]["sleep"]["seconds"] == 5, "defaults: a preStop pause before the drain")
    check(len(pod.get("topologySpreadConstraints", [])) == 2, "defaults: replicas spread over nodes and zones")
    check("volumes" not in pod, "defaults: no TLS volume")
    check(pod["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTP", "defaults: plain probes")

    extras = render({
        "tls": {"enabled": True, "secretName": "tw-tls"},
        "autoscaling": {"enabled": True, "minReplicas": 3, "maxReplicas": 12},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "imagePullSecrets": [{"name": "registry"}],
        "podAnnotations": {"example.com/team": "events"},
    })
    validate(extras, "TLS, autoscaling, ServiceMonitor")
    by_kind = kinds(extras)
    deployment = by_kind["Deployment"][0]["spec"]
    pod = deployment["template"]["spec"]
    container = pod["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    check("replicas" not in deployment, "autoscaling: the HPA owns the replica count")
    hpa = by_kind.get("HorizontalPodAutoscaler", [{}])[0].get("spec", {})
    check(hpa.get("maxReplicas") == 12 and hpa.get("scaleTargetRef", {}).get("kind") == "Deployment", "autoscaling: an HPA on the Deployment")
    check(pod["volumes"][0]["secret"]["secretName"] == "tw-tls", "TLS: the Secret is mounted")
    mount = container["volumeMounts"][0]["mountPath"]
    check(env.get("TIDEWAY_TLS_CERT") == f"{mount}/tls.crt" and env.get("TIDEWAY_TLS_KEY") == f"{mount}/tls.key", "TLS: the gateway reads the mounted pair")
    check(container["readinessProbe"]["httpGet"]["scheme"] == "HTTPS", "TLS: probes over HTTPS")
    monitor = by_kind.get("ServiceMonitor", [{}])[0]
    check(monitor.get("apiVersion") == "monitoring.coreos.com/v1", "ServiceMonitor: rendered")
    endpoint = monitor.get("spec", {}).get("endpoints", [{}])[0]
    check(endpoint.get("path") == "/metrics" and endpoint.get("scheme") == "https", "ServiceMonitor: /metrics over HTTPS")
    check(monitor["metadata"]["labels"].get("release") == "prometheus", "ServiceMonitor: its labels")
    check(pod["imagePullSecrets"] == [{"name": "registry"}], "imagePullSecrets")
    check(deployment["template"]["metadata"]["annotations"].get("example.com/team") == "events", "podAnnotations")

    for values, why in [
        ({"redis": {"cluster": True}, "apiKeys": {"keys": ["k"], "tokenSecret": SECRET}}, "Redis Cluster mode with the built-in single Redis"),
        ({"redis": {"enabled": False}, "apiKeys": {"keys": ["k"], "tokenSecret": SECRET}}, "external Redis without a URL"),
        ({"apiKeys": {"keys": ["k"], "tokenSecret": "short"}}, "a token secret the gateway refuses (under 32 bytes)"),
        ({"tls": {"enabled": True}}, "TLS without its Secret"),
        ({"terminationGracePeriodSeconds": 20}, "a grace period shorter than the preStop pause and the drain"),
        ({"replicaCount": "three"}, "a replica count that is not a number (the schema)"),
        ({"gateway": {"drainTimeout": "20 seconds"}}, "a duration the gateway cannot read (the schema)"),
        ({"replicas": 3}, "a value the chart does not have (the schema)"),
    ]:
        try:
            render(values)
            failures.append(f"the chart rendered with {why}; it must refuse")
        except helm_python.HelmError:
            pass


def compose_config(name: str) -> dict:
    result = subprocess.run(
        ["docker-compose", "-f", os.path.join(ROOT, "compose", name), "config"],
        capture_output=True,
        text=True,
        env={**os.environ, "SSE_PUBLISHER_API_KEYS": "k", "TIDEWAY_TOKEN_SECRET": SECRET},
    )
    check(result.returncode == 0, f"{name}: docker-compose config failed:\n{result.stderr}")
    return yaml.safe_load(result.stdout) if result.returncode == 0 else {"services": {}}


def check_compose() -> None:
    services = compose_config("docker-compose.yml")["services"]
    gateways = [s for name, s in services.items() if name.startswith("gateway-")]
    check(len(gateways) == 3, "compose: three gateways")
    node_ids = {g["environment"]["TIDEWAY_NODE_ID"] for g in gateways}
    check(len(node_ids) == 3, f"compose: distinct node ids, got {node_ids}")
    check(all(g["environment"]["TIDEWAY_ADAPTER"] == "redis" for g in gateways), "compose: Redis mode")
    check("redis" in services and "lb" in services, "compose: Redis and a load balancer")
    check(
        all(g["environment"]["TIDEWAY_TOKEN_SECRET"] == SECRET for g in gateways),
        "compose: every gateway shares the one token secret given",
    )
    unset = subprocess.run(
        ["docker-compose", "-f", os.path.join(ROOT, "compose", "docker-compose.yml"), "config"],
        capture_output=True,
        text=True,
        env={k: v for k, v in {**os.environ, "SSE_PUBLISHER_API_KEYS": "k"}.items() if k != "TIDEWAY_TOKEN_SECRET"},
    )
    check(
        unset.returncode != 0 and "TIDEWAY_TOKEN_SECRET" in unset.stderr,
        "compose: no default token secret; it refuses to render without one",
    )
    nginx = open(os.path.join(ROOT, "compose", "nginx.conf")).read()
    for setting in ["proxy_buffering off", "proxy_read_timeout 1h", "proxy_http_version 1.1"]:
        check(setting in nginx, f"nginx.conf: {setting}")
    single = compose_config("docker-compose.single.yml")["services"]
    check(list(single) == ["gateway"], "compose single: one gateway")
    sharded = compose_config("docker-compose.redis-cluster.yml")["services"]
    redis = [s for name, s in sharded.items() if name.startswith("redis-") and name != "redis-cluster-init"]
    check(len(redis) == 6, "compose Redis Cluster: six Redis processes")
    check(all("--cluster-enabled" in r["command"] for r in redis), "compose Redis Cluster: cluster mode on every Redis")
    init = " ".join(sharded.get("redis-cluster-init", {}).get("command", []))
    addresses = [r["networks"]["tideway"]["ipv4_address"] for r in redis]
    check(
        "--cluster create" in init and all(f"{a}:6379" in init for a in addresses),
        "compose Redis Cluster: the init job joins every Redis",
    )
    cluster_gateways = [s for name, s in sharded.items() if name.startswith("gateway-")]
    check(len(cluster_gateways) == 3, "compose Redis Cluster: three gateways")
    for g in cluster_gateways:
        env = g["environment"]
        check(env.get("TIDEWAY_REDIS_CLUSTER") == "true", "compose Redis Cluster: gateways in cluster mode")
        seeds = [u.removeprefix("redis://").removesuffix(":6379") for u in env["REDIS_URL"].split(",")]
        check(all(seed in addresses for seed in seeds), f"compose Redis Cluster: seeds {seeds} are cluster members")
        check(
            g["depends_on"]["redis-cluster-init"]["condition"] == "service_completed_successfully",
            "compose Redis Cluster: gateways start after the cluster is joined",
        )


def check_dockerfile() -> None:
    lines = [line.strip() for line in open(os.path.join(ROOT, "Dockerfile")) if line.strip()]
    stages = [i for i, line in enumerate(lines) if line.upper().startswith("FROM ")]
    final = lines[stages[-1]:]
    check(len(stages) >= 2, "Dockerfile: multi-stage")
    user = [line for line in final if line.upper().startswith("USER ")]
    check(bool(user) and not user[-1].split()[1].startswith(("root", "0")), "Dockerfile: a non-root user")
    check(any(line.upper().startswith("HEALTHCHECK ") and "probe" in line for line in final), "Dockerfile: HEALTHCHECK via tideway probe")
    check(any(line.startswith("ENTRYPOINT [") for line in final), "Dockerfile: exec-form ENTRYPOINT, so SIGTERM reaches the gateway")


def main() -> int:
    check_chart()
    check_compose()
    check_dockerfile()
    if failures:
        print("deploy check failed:\n  " + "\n  ".join(failures), file=sys.stderr)
        return 1
    print("deploy check: chart (built-in, external and cluster Redis), compose files and Dockerfile are valid", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
