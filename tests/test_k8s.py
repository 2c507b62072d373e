"""The deployment's promises, checked offline over k8s/: hardened pods,
probes (gRPC health; HTTP for the web front end), resources, identities,
network isolation, production's GPU,
autoscaling and disruption budgets, no credentials in git, and config that
names real settings.

The raw base files are always checked. The rendered base and overlays need
`kubectl kustomize` (or `kustomize build`); without one those tests skip,
saying so. Schema validation is scripts/k8s_check.py's job."""

from __future__ import annotations

import dataclasses
import importlib
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

from scripts.k8s_check import render, renderer
from services.common import config as cfg
from services.common.config import env_name

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
PART_OF = "app.kubernetes.io/part-of"
NAME = "app.kubernetes.io/name"
COMPONENT = "app.kubernetes.io/component"
UID = 10001
METRICS_PORT = 9090
MONITORING_NAMESPACE = "monitoring"


@dataclasses.dataclass(frozen=True)
class Svc:
    name: str
    port: int
    health: str  # gRPC: the health service name; HTTP: the health path
    config: str  # module:class
    protocol: str = "grpc"  # or "http": no metrics port, no audiosearch-common
    public: bool = False  # reachable from outside the namespace

    @property
    def label(self) -> str:
        return f"audiosearch-{self.name}"

    def klass(self) -> type:
        module, cls = self.config.split(":")
        return getattr(importlib.import_module(module), cls)

    def fields(self) -> set[str]:
        return {env_name(f.name) for f in dataclasses.fields(self.klass())}


SERVICES = {
    s.name: s
    for s in (
        Svc(
            "gateway",
            50051,
            "audiosearch.gateway.v1.GatewayService",
            "services.gateway.config:GatewayConfig",
            public=True,
        ),
        Svc("embedder", 50052, "audiosearch.embedder.v1.EmbedderService", "services.embedder.config:EmbedderConfig"),
        Svc("search", 50053, "audiosearch.search.v1.SearchService", "services.search.config:SearchConfig"),
        Svc("catalog", 50054, "audiosearch.catalog.v1.CatalogService", "services.catalog.config:CatalogConfig"),
        Svc("web", 8080, "/healthz", "services.web.config:WebConfig", protocol="http", public=True),
    )
}
GRPC_SERVICES = [s for s in SERVICES.values() if s.protocol == "grpc"]
HTTP_SERVICES = [s for s in SERVICES.values() if s.protocol == "http"]
# The web front end's uploads: spooled to /tmp, then held in memory about
# twice (bytes and gRPC chunks). The pod must fit this many at the limit.
CONCURRENT_UPLOADS = 4
# Third-party workloads of the dev overlay: who may call them, on which port.
DATA_STORES = {"milvus": ("search", 19530), "postgres": ("catalog", 5432)}

# Trees of documents: the raw base files, and each kustomization rendered.
RENDERED = {
    "base": K8S / "base",
    "dev": K8S / "overlays" / "dev",
    "production": K8S / "overlays" / "production",
    "production-milvus": K8S / "overlays" / "production" / "milvus",
}
APP_TREES = ["base-raw", "base", "dev", "production"]


def load_docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def raw_base() -> list[dict]:
    spec = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for entry in spec["resources"]:
        docs += load_docs(K8S / "base" / entry)
    return docs


class Trees:
    """Renders each kustomization once, on first use."""

    def __init__(self) -> None:
        self.cache: dict[str, list[dict]] = {"base-raw": raw_base()}
        self.cmd = renderer()

    def __call__(self, name: str) -> list[dict]:
        if name not in self.cache:
            if self.cmd is None:
                pytest.skip("neither kubectl nor kustomize on PATH: rendered overlays not checked (raw base files are)")
            self.cache[name] = render(self.cmd, RENDERED[name])
        return self.cache[name]


@pytest.fixture(scope="module")
def trees() -> Trees:
    return Trees()


# --- helpers over documents ---------------------------------------------------


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d.get("kind") == kind]


def named(docs: list[dict], kind: str, name: str) -> dict:
    found = [d for d in of_kind(docs, kind) if d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name!r}, found {len(found)}"
    return found[0]


def workloads(docs: list[dict]) -> list[dict]:
    return [d for d in docs if d.get("kind") in WORKLOAD_KINDS]


def template(workload: dict) -> dict:
    spec = workload["spec"]
    if workload["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]


def pod_spec(workload: dict) -> dict:
    return template(workload)["spec"]


def pod_labels(workload: dict) -> dict:
    return template(workload)["metadata"].get("labels", {})


def containers(pod: dict, init: bool = True) -> list[dict]:
    return (pod.get("initContainers", []) if init else []) + pod["containers"]


def wid(workload: dict) -> str:
    return f"{workload['kind']}/{workload['metadata']['name']}"


def service_of(workload: dict) -> Svc | None:
    """The audiosearch service a workload runs, by its pod labels."""
    labels = pod_labels(workload)
    for svc in SERVICES.values():
        if labels.get(NAME) == svc.label:
            return svc
    return None


def deployment(docs: list[dict], svc: Svc) -> dict:
    return named(docs, "Deployment", svc.name)


def main_container(workload: dict, name: str) -> dict:
    return next(c for c in pod_spec(workload)["containers"] if c["name"] == name)


def env_of(docs: list[dict], container: dict) -> dict[str, object]:
    """The container's environment: its ConfigMaps' data (in order), then
    its own env entries (a value, or a ("secret", name, key) reference)."""
    env: dict[str, object] = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        assert ref, f"{container['name']}: envFrom other than a ConfigMap: {source}"
        env.update(named(docs, "ConfigMap", ref["name"]).get("data", {}))
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        else:
            ref = entry["valueFrom"]["secretKeyRef"]
            env[entry["name"]] = ("secret", ref["name"], ref["key"])
    return env


def selects(selector: dict | None, labels: dict) -> bool:
    """Whether a label selector (matchLabels / matchExpressions) matches."""
    selector = selector or {}
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


UNITS = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "m": 1e-3}


def quantity(value: object) -> float:
    text = str(value)
    for unit in sorted(UNITS, key=len, reverse=True):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * UNITS[unit]
    return float(text)


def report(problems: list[str]) -> None:
    assert not problems, "\n".join(problems)


# --- every workload -----------------------------------------------------------


@pytest.mark.parametrize("tree", [*APP_TREES, "production-milvus"])
def test_every_workload_is_hardened(trees: Trees, tree: str) -> None:
    problems: list[str] = []
    for w in workloads(trees(tree)):
        pod, who = pod_spec(w), wid(w)
        sc = pod.get("securityContext", {})
        if sc.get("runAsNonRoot") is not True:
            problems.append(f"{who}: pod runAsNonRoot is not true")
        if not isinstance(sc.get("runAsUser"), int) or sc["runAsUser"] <= 0:
            problems.append(f"{who}: pod runAsUser must be a non-zero uid")
        if not isinstance(sc.get("fsGroup"), int):
            problems.append(f"{who}: pod fsGroup unset (volumes would not be writable for the uid)")
        if sc.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{who}: pod seccompProfile is not RuntimeDefault")
        if service_of(w) and (sc.get("runAsUser"), sc.get("runAsGroup"), sc.get("fsGroup")) != (UID, UID, UID):
            problems.append(f"{who}: runAsUser/runAsGroup/fsGroup must all be {UID}")
        if pod.get("automountServiceAccountToken") is not False:
            problems.append(f"{who}: automountServiceAccountToken is not false")
        if pod.get("enableServiceLinks") is not False:
            problems.append(f"{who}: enableServiceLinks is not false")
        for key in ("hostNetwork", "hostPID", "hostIPC"):
            if pod.get(key):
                problems.append(f"{who}: {key}")
        for volume in pod.get("volumes", []):
            if "hostPath" in volume:
                problems.append(f"{who}: hostPath volume {volume['name']}")
        for c in containers(pod):
            csc, cid = c.get("securityContext", {}), f"{who} container {c['name']}"
            if csc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cid}: allowPrivilegeEscalation is not false")
            if csc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cid}: readOnlyRootFilesystem is not true")
            if csc.get("privileged") is not False:
                problems.append(f"{cid}: privileged is not false")
            if csc.get("capabilities", {}).get("drop") != ["ALL"] or csc.get("capabilities", {}).get("add"):
                problems.append(f"{cid}: capabilities must drop [ALL] and add none")
            if csc.get("runAsNonRoot") is False or csc.get("runAsUser") == 0:
                problems.append(f"{cid}: overrides the pod to run as root")
    report(problems)


@pytest.mark.parametrize("tree", [*APP_TREES, "production-milvus"])
def test_every_container_has_requests_and_limits(trees: Trees, tree: str) -> None:
    problems: list[str] = []
    for w in workloads(trees(tree)):
        for c in containers(pod_spec(w)):
            res, cid = c.get("resources", {}), f"{wid(w)} container {c['name']}"
            for resource in ("cpu", "memory"):
                req, lim = res.get("requests", {}).get(resource), res.get("limits", {}).get(resource)
                if req is None or lim is None:
                    problems.append(f"{cid}: {resource} needs both a request and a limit")
                elif quantity(req) > quantity(lim):
                    problems.append(f"{cid}: {resource} request {req} above its limit {lim}")
    report(problems)


@pytest.mark.parametrize("tree", [*APP_TREES, "production-milvus"])
def test_every_container_has_readiness_and_liveness_probes(trees: Trees, tree: str) -> None:
    problems: list[str] = []
    for w in workloads(trees(tree)):
        for c in pod_spec(w)["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                if not c.get(probe):
                    problems.append(f"{wid(w)} container {c['name']}: no {probe}")
    report(problems)


@pytest.mark.parametrize("tree", APP_TREES)
def test_services_probe_their_grpc_health(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    for svc in GRPC_SERVICES:
        c = main_container(deployment(docs, svc), svc.name)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"grpc": svc.port, "metrics": METRICS_PORT}, f"{svc.name}: ports {ports}"
        ready, live, start = c["readinessProbe"], c["livenessProbe"], c.get("startupProbe")
        assert ready.get("grpc") == {"port": svc.port, "service": svc.health}, f"{svc.name}: readiness {ready}"
        assert live.get("grpc", {}).get("port") == svc.port, f"{svc.name}: liveness {live}"
        # NOT_SERVING while starting: liveness must wait for a startup probe.
        assert start and start.get("grpc", {}).get("port") == svc.port, f"{svc.name}: startupProbe {start}"


@pytest.mark.parametrize("tree", APP_TREES)
def test_http_services_probe_their_http_health(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    assert HTTP_SERVICES
    for svc in HTTP_SERVICES:
        d = deployment(docs, svc)
        c = main_container(d, svc.name)
        ports = {p["name"]: p["containerPort"] for p in c["ports"]}
        assert ports == {"http": svc.port}, f"{svc.name}: ports {ports} (no metrics port: it serves none)"
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            probe = c.get(kind) or {}
            assert "grpc" not in probe and "exec" not in probe, f"{svc.name}: {kind} {probe}"
            get = probe.get("httpGet", {})
            assert get.get("path") == svc.health and get.get("port") in (svc.port, "http"), f"{svc.name}: {kind}"
            assert get.get("scheme", "HTTP") == "HTTP", f"{svc.name}: {kind} {get}"
        # A preStop pause keeps serving while the pod leaves the endpoints.
        pause = c.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        assert pause[:1] == ["sleep"], f"{svc.name}: preStop {pause}"
        assert pod_spec(d).get("terminationGracePeriodSeconds", 30) > float(pause[1]), svc.name


@pytest.mark.parametrize("tree", APP_TREES)
def test_pods_outlive_their_drain(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    for svc in GRPC_SERVICES:
        d = deployment(docs, svc)
        grace = float(env_of(docs, main_container(d, svc.name)).get(env_name("shutdown_grace_seconds"), 10))
        assert pod_spec(d).get("terminationGracePeriodSeconds", 30) > grace, svc.name


@pytest.mark.parametrize("tree", APP_TREES)
def test_each_service_has_its_own_service_account(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    used = set()
    for w in workloads(docs):
        account = pod_spec(w).get("serviceAccountName")
        assert account and account != "default", f"{wid(w)}: runs as the default ServiceAccount"
        sa = named(docs, "ServiceAccount", account)
        assert sa.get("automountServiceAccountToken") is False, f"ServiceAccount {account} mounts a token"
        assert account not in used, f"ServiceAccount {account} shared by several workloads"
        used.add(account)
        if svc := service_of(w):
            assert account == svc.name, f"{wid(w)} runs as {account}"
    assert set(SERVICES) <= used


@pytest.mark.parametrize("tree", APP_TREES)
def test_services_expose_grpc_and_metrics(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    for svc in GRPC_SERVICES:
        service = named(docs, "Service", svc.name)
        spec = service["spec"]
        assert spec.get("type", "ClusterIP") == "ClusterIP", svc.name
        assert selects({"matchLabels": spec["selector"]}, pod_labels(deployment(docs, svc))), svc.name
        ports = {p["name"]: p for p in spec["ports"]}
        assert ports["grpc"]["port"] == svc.port and ports["grpc"].get("appProtocol") == "grpc", svc.name
        assert ports["metrics"]["port"] == METRICS_PORT, svc.name


@pytest.mark.parametrize("tree", APP_TREES)
def test_http_services_expose_http_only(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    for svc in HTTP_SERVICES:
        spec = named(docs, "Service", svc.name)["spec"]
        assert spec.get("type", "ClusterIP") == "ClusterIP", svc.name
        assert selects({"matchLabels": spec["selector"]}, pod_labels(deployment(docs, svc))), svc.name
        ports = {p["name"]: p for p in spec["ports"]}
        assert set(ports) == {"http"}, f"{svc.name}: Service ports {sorted(ports)}"
        http = ports["http"]
        assert http["port"] == svc.port and http.get("targetPort") in ("http", svc.port), svc.name
        assert http.get("appProtocol") == "http", svc.name
        # No metrics endpoint: an annotation would have Prometheus scrape a 404.
        notes = template(deployment(docs, svc))["metadata"].get("annotations", {})
        assert not any(k.startswith("prometheus.io/") for k in notes), f"{svc.name}: {notes}"


@pytest.mark.parametrize("tree", APP_TREES)
def test_read_only_root_has_a_bounded_tmp(trees: Trees, tree: str) -> None:
    """Each service writes only to volumes: /tmp is a size-limited emptyDir;
    the web front end's fits its concurrent uploads on disk and in memory."""
    docs = trees(tree)
    for svc in SERVICES.values():
        d = deployment(docs, svc)
        c = main_container(d, svc.name)
        mount = next((m for m in c.get("volumeMounts", []) if m["mountPath"] == "/tmp"), None)
        assert mount, f"{svc.name}: no /tmp volume on a read-only root filesystem"
        volume = next(v for v in pod_spec(d)["volumes"] if v["name"] == mount["name"])
        assert volume.get("emptyDir", {}).get("sizeLimit"), f"{svc.name}: /tmp must be a size-limited emptyDir"
    for svc in HTTP_SERVICES:
        d = deployment(docs, svc)
        c = main_container(d, svc.name)
        upload = int(env_of(docs, c)[env_name("max_upload_bytes")])
        mount = next(m for m in c["volumeMounts"] if m["mountPath"] == "/tmp")
        tmp = next(v for v in pod_spec(d)["volumes"] if v["name"] == mount["name"])["emptyDir"]
        assert tmp.get("medium") != "Memory", f"{svc.name}: spooled uploads would count as memory"
        assert quantity(tmp["sizeLimit"]) >= CONCURRENT_UPLOADS * upload, f"{svc.name}: /tmp {tmp['sizeLimit']}"
        memory = quantity(c["resources"]["limits"]["memory"])
        assert memory >= CONCURRENT_UPLOADS * 2 * upload, f"{svc.name}: memory limit for {CONCURRENT_UPLOADS} uploads"


@pytest.mark.parametrize("tree", APP_TREES)
def test_recommended_labels(trees: Trees, tree: str) -> None:
    problems = []
    for w in workloads(trees(tree)):
        for where, labels in (("metadata", w["metadata"].get("labels", {})), ("pod template", pod_labels(w))):
            if labels.get(PART_OF) != "audiosearch" or not labels.get(NAME) or not labels.get(COMPONENT):
                problems.append(f"{wid(w)} {where}: needs {NAME}, {COMPONENT} and {PART_OF}=audiosearch")
        if not selects(w["spec"].get("selector"), pod_labels(w)):
            problems.append(f"{wid(w)}: selector does not match its pods")
    report(problems)


@pytest.mark.parametrize("tree", APP_TREES)
def test_metrics_are_scrapable(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    for svc in GRPC_SERVICES:
        d = deployment(docs, svc)
        notes = template(d)["metadata"].get("annotations", {})
        assert notes.get("prometheus.io/scrape") == "true", svc.name
        assert notes.get("prometheus.io/port") == str(METRICS_PORT), svc.name
        assert notes.get("prometheus.io/path") == "/metrics", svc.name
        env = env_of(docs, main_container(d, svc.name))
        assert env.get(env_name("metrics_listen")) == f"0.0.0.0:{METRICS_PORT}", svc.name
        assert env.get(env_name("listen")) == f"0.0.0.0:{svc.port}", svc.name


# --- configuration names real settings -------------------------------------------


@pytest.mark.parametrize("tree", APP_TREES)
def test_every_audiosearch_variable_is_a_config_field(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    problems = []
    for w in workloads(docs):
        svc = service_of(w)
        if svc is None:
            continue
        fields = svc.fields()
        for c in containers(pod_spec(w)):
            for name in env_of(docs, c):
                if name.startswith("AUDIOSEARCH_") and name not in fields:
                    problems.append(f"{wid(w)} container {c['name']}: {name} is not a field of {svc.config}")
    report(problems)


@pytest.mark.parametrize("tree", APP_TREES)
def test_configured_values_parse(trees: Trees, tree: str) -> None:
    """Each container's environment loads into its config class (types,
    allowed values) as the service would load it at start-up."""
    docs = trees(tree)
    for w in workloads(docs):
        if svc := service_of(w):
            for c in containers(pod_spec(w)):
                env = {k: v if isinstance(v, str) else "from-a-secret" for k, v in env_of(docs, c).items()}
                try:
                    cfg.load(svc.klass(), environ=env)
                except cfg.ConfigError as exc:
                    pytest.fail(f"{tree} {wid(w)} container {c['name']}: {exc}")


@pytest.mark.parametrize("tree", APP_TREES)
def test_web_reads_only_its_config_and_calls_the_gateway(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    gateway = SERVICES["gateway"]
    gw_env = env_of(docs, main_container(deployment(docs, gateway), gateway.name))
    for svc in HTTP_SERVICES:
        c = main_container(deployment(docs, svc), svc.name)
        sources = [s.get("configMapRef", {}).get("name") for s in c.get("envFrom", [])]
        # audiosearch-common holds gRPC server settings WebConfig does not have.
        assert sources == [f"{svc.name}-config"], f"{svc.name}: envFrom {sources}"
        env = env_of(docs, c)
        assert env.get(env_name("http_listen")) == f"0.0.0.0:{svc.port}", svc.name
        addr = str(env[env_name("gateway_addr")]).removeprefix("dns:///")
        host, _, port = addr.rpartition(":")
        ports = {p["name"]: p["port"] for p in named(docs, "Service", host.split(".")[0])["spec"]["ports"]}
        assert host.split(".")[0] == gateway.name and ports.get("grpc") == int(port) == gateway.port, addr
        # A larger limit than the gateway's would only be refused there.
        assert int(env[env_name("max_upload_bytes")]) <= int(gw_env[env_name("max_upload_bytes")]), svc.name


# Read by the CLI, not by a service.
CLI_VARIABLES = {"AUDIOSEARCH_GATEWAY", "AUDIOSEARCH_TOKEN"}


def test_no_unknown_audiosearch_variable_anywhere_in_k8s_or_its_docs() -> None:
    """Raw text, comments and patches included: a typo anywhere fails."""
    known = set().union(*(svc.fields() for svc in SERVICES.values()))
    problems = []
    for path in [*sorted(K8S.rglob("*.y*ml")), ROOT / "docs" / "deployment.md"]:
        allowed = known | CLI_VARIABLES if path.suffix == ".md" else known
        for name in sorted(set(re.findall(r"AUDIOSEARCH_[A-Z0-9_]+", path.read_text()))):
            if name not in allowed:
                problems.append(f"{path.relative_to(ROOT)}: {name} is not a config field of any service")
    report(problems)


# --- network isolation --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Peer:
    kind: str  # "any", "ip", "namespace" or "pods"
    namespace: str | None = None
    pods: frozenset[str] = frozenset()


def port_matches(rule_port: dict, port: dict) -> bool:
    if rule_port.get("protocol", "TCP") != port.get("protocol", "TCP"):
        return False
    target = rule_port.get("port")
    return target is None or target in (port["containerPort"], port.get("name"))


def peers_of(docs: list[dict], labels: dict, port: dict) -> set[Peer]:
    """Who the namespace's NetworkPolicies let reach `port` of pods with `labels`."""
    pods = {wid(w): pod_labels(w) for w in workloads(docs)}
    peers: set[Peer] = set()
    for np in of_kind(docs, "NetworkPolicy"):
        spec = np["spec"]
        if "Ingress" not in spec.get("policyTypes", ["Ingress"]) or not selects(spec["podSelector"], labels):
            continue
        for rule in spec.get("ingress", []):
            if rule.get("ports") and not any(port_matches(p, port) for p in rule["ports"]):
                continue
            if not rule.get("from"):
                peers.add(Peer("any"))
            for src in rule.get("from", []):
                if "ipBlock" in src:
                    peers.add(Peer("ip"))
                elif "namespaceSelector" in src:
                    ns = src["namespaceSelector"].get("matchLabels", {}).get("kubernetes.io/metadata.name", "*")
                    chosen = "*" if "podSelector" not in src else str(src["podSelector"])
                    peers.add(Peer("namespace", ns, frozenset([chosen])))
                else:
                    chosen = frozenset(w for w, lab in pods.items() if selects(src["podSelector"], lab))
                    peers.add(Peer("pods", pods=chosen))
    return peers


def workload_for(docs: list[dict], name_label: str) -> str:
    return next(wid(w) for w in workloads(docs) if pod_labels(w).get(NAME) == name_label)


@pytest.mark.parametrize("tree", APP_TREES)
def test_network_policies_isolate_the_services(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    deny = [
        np
        for np in of_kind(docs, "NetworkPolicy")
        if np["spec"]["podSelector"] == {} and "Ingress" in np["spec"]["policyTypes"] and not np["spec"].get("ingress")
    ]
    assert deny, "no default-deny ingress policy for the namespace"
    gateway = workload_for(docs, SERVICES["gateway"].label)
    doors = {workload_for(docs, svc.label): svc for svc in SERVICES.values() if svc.public}
    callers = {svc.label: gateway for svc in SERVICES.values() if not svc.public}
    callers |= {store: workload_for(docs, SERVICES[caller].label) for store, (caller, _) in DATA_STORES.items()}
    problems, public = [], set()
    for w in workloads(docs):
        labels, who = pod_labels(w), wid(w)
        for c in pod_spec(w)["containers"]:
            for port in c.get("ports", []):
                where = f"{who} port {port.get('name')}/{port['containerPort']}"
                peers = peers_of(docs, labels, port)
                outside = {p for p in peers if p.kind in ("any", "ip") or p.kind == "namespace"}
                if port.get("name") == "metrics":
                    if outside - {Peer("namespace", MONITORING_NAMESPACE, frozenset(["*"]))}:
                        problems.append(f"{where}: metrics open beyond namespace {MONITORING_NAMESPACE}: {outside}")
                    if service_of(w) and Peer("namespace", MONITORING_NAMESPACE, frozenset(["*"])) not in peers:
                        problems.append(f"{where}: Prometheus in namespace {MONITORING_NAMESPACE} cannot scrape")
                    continue
                if outside:
                    public.add(who)
                if who in doors and port["containerPort"] == doors[who].port:
                    if Peer("any") not in peers:
                        problems.append(f"{where}: {doors[who].name} must accept {doors[who].protocol} from anywhere")
                    continue
                inside = {p for p in peers if p.kind == "pods"}
                expected = callers.get(labels.get(NAME))
                allowed = set().union(*(p.pods for p in inside)) if inside else set()
                if outside or (expected and allowed != {expected}) or (not expected and allowed):
                    problems.append(f"{where}: reachable by {sorted(allowed)} {outside or ''}, expected {expected}")
    if public != set(doors):
        problems.append(f"only {sorted(doors)} may accept traffic from outside the namespace, not {sorted(public)}")
    # The web front end is a client of the gateway: its pods must get through.
    grpc_port = {"name": "grpc", "containerPort": SERVICES["gateway"].port}
    gateway_peers = peers_of(docs, pod_labels(deployment(docs, SERVICES["gateway"])), grpc_port)
    for svc in HTTP_SERVICES:
        web = workload_for(docs, svc.label)
        if Peer("any") not in gateway_peers and not any(web in p.pods for p in gateway_peers if p.kind == "pods"):
            problems.append(f"{web} cannot reach the gateway's gRPC port: {gateway_peers}")
    report(problems)


def test_production_milvus_namespace_admits_only_search(trees: Trees) -> None:
    app, docs = trees("production"), trees("production-milvus")
    app_ns = deployment(app, SERVICES["search"])["metadata"]["namespace"]
    milvus = of_kind(docs, "Milvus")[0]
    proxy_labels = milvus["spec"]["components"]["proxy"]["podLabels"]
    proxy_port = {"name": "milvus", "containerPort": 19530}
    metrics_port = {"name": "metrics", "containerPort": 9091}
    peers = peers_of(docs, proxy_labels, proxy_port)
    search_sel = {"matchLabels": {NAME: SERVICES["search"].label}}
    assert Peer("namespace", app_ns, frozenset([str(search_sel)])) in peers, peers
    assert not {p for p in peers if p.kind in ("any", "ip")}, peers
    outside = {p.namespace for p in peers if p.kind == "namespace"}
    assert outside == {app_ns, "milvus-operator"}, outside
    # Any other Milvus pod: its own namespace, the operator, Prometheus (9091).
    other = peers_of(docs, {"app.kubernetes.io/instance": "audiosearch"}, proxy_port)
    assert {p.namespace for p in other if p.kind == "namespace"} == {"milvus-operator"}, other
    assert MONITORING_NAMESPACE in {p.namespace for p in peers_of(docs, proxy_labels, metrics_port)}


# --- weights, images, secrets ------------------------------------------------------


@pytest.mark.parametrize("tree", APP_TREES)
def test_weights_come_from_a_volume_filled_by_an_init_container(trees: Trees, tree: str) -> None:
    docs = trees(tree)
    d = deployment(docs, SERVICES["embedder"])
    pod = pod_spec(d)
    main = main_container(d, "embedder")
    env = env_of(docs, main)
    checkpoint = weights_path(env)
    assert str(env[env_name("cnn14_download")]).lower() == "false", "the server must not download weights"
    mounts = {m["mountPath"]: m for m in main["volumeMounts"]}
    mount = mounts[str(checkpoint.parent)]
    assert mount.get("readOnly") is True, "the embedder mounts its weights read-only"
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert "persistentVolumeClaim" in volume or "emptyDir" in volume, volume
    (init,) = [c for c in pod.get("initContainers", []) if "fetch-weights" in c.get("command", [])]
    assert init["image"] == main["image"], "the init container uses the embedder's own image"
    assert any(m["name"] == mount["name"] and not m.get("readOnly") for m in init["volumeMounts"])
    assert weights_path(env_of(docs, init)) == checkpoint


def weights_path(env: dict[str, object]) -> Path:
    """Where a container with this environment finds (or puts) the Cnn14 weights."""
    from services.embedder.config import EmbedderConfig

    config = cfg.load(EmbedderConfig, environ={k: v for k, v in env.items() if isinstance(v, str)})
    return config.checkpoint_path("panns-cnn14")


@pytest.mark.parametrize("tree", ["dev", "production", "production-milvus"])
def test_images_are_pinned(trees: Trees, tree: str) -> None:
    problems = []
    images = [c["image"] for w in workloads(trees(tree)) for c in containers(pod_spec(w))]
    images += [m["spec"]["components"]["image"] for m in of_kind(trees(tree), "Milvus")]
    for image in images:
        tag = image.rsplit("/", 1)[-1]
        if "@sha256:" not in image and (":" not in tag or tag.endswith(":latest")):
            problems.append(f"{tree}: image {image} has no pinned tag")
        if tree == "production" and "." not in image.split("/")[0] and not image.startswith("postgres"):
            problems.append(f"{tree}: image {image} names no registry")
    report(problems)


def test_no_credentials_in_git() -> None:
    problems = []
    for path in sorted(K8S.rglob("*.y*ml")):
        rel = path.relative_to(ROOT)
        for doc in load_docs(path):
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "Secret":
                problems.append(f"{rel}: a Secret in git ({doc['metadata']['name']})")
            for value in (doc.get("data") or {}).values() if doc.get("kind") == "ConfigMap" else []:
                if re.search(r"://[^/\s:@]+:[^/\s@]+@", str(value)):
                    problems.append(f"{rel}: a ConfigMap holds a URL with a password")
            for gen in doc.get("secretGenerator", []) if path.name == "kustomization.yaml" else []:
                if path.parent != K8S / "overlays" / "dev":
                    problems.append(f"{rel}: generates Secret {gen['name']}: only the dev overlay may")
                if gen.get("files") or gen.get("envs"):
                    problems.append(f"{rel}: Secret {gen['name']} from files: literals only, visibly fake")
                for literal in gen.get("literals", []):
                    if "dev-only" not in literal:
                        problems.append(f"{rel}: Secret {gen['name']} literal not marked dev-only")
    report(problems)


# --- dev ------------------------------------------------------------------------------


def test_dev_runs_one_of_each_with_its_own_data_stores(trees: Trees) -> None:
    docs = trees("dev")
    for svc in SERVICES.values():
        assert deployment(docs, svc)["spec"]["replicas"] == 1, svc.name
    embedder = main_container(deployment(docs, SERVICES["embedder"]), "embedder")
    assert embedder["image"].endswith("-cpu")
    env = env_of(docs, embedder)
    assert env[env_name("device")] == "cpu" and env[env_name("max_batch")] == "8"
    milvus = named(docs, "StatefulSet", "milvus")
    menv = env_of(docs, main_container(milvus, "milvus"))
    assert menv["ETCD_USE_EMBED"] == "true" and menv["COMMON_STORAGETYPE"] == "local"
    assert main_container(milvus, "milvus")["args"] == ["milvus", "run", "standalone"]
    search = env_of(docs, main_container(deployment(docs, SERVICES["search"]), "search"))
    uri = urlsplit(search[env_name("milvus_uri")])
    assert any(p["port"] == uri.port for p in named(docs, "Service", uri.hostname)["spec"]["ports"])
    postgres = named(docs, "StatefulSet", "postgres")
    assert pod_spec(postgres)["securityContext"]["runAsUser"] == 999
    _, secret, key = env_of(docs, main_container(deployment(docs, SERVICES["catalog"]), "catalog"))[
        env_name("database_url")
    ]
    generated = named(docs, "Secret", secret)
    assert key in generated["data"]
    for store in DATA_STORES:
        assert named(docs, "ServiceAccount", store)
    assert not of_kind(docs, "HorizontalPodAutoscaler")


# --- production -------------------------------------------------------------------------


def test_production_embedder_runs_on_gpu_nodes(trees: Trees) -> None:
    docs = trees("production")
    d = deployment(docs, SERVICES["embedder"])
    pod, c = pod_spec(d), main_container(d, "embedder")
    assert str(c["resources"]["limits"].get("nvidia.com/gpu")) == "1", "the embedder needs a GPU limit"
    assert pod["nodeSelector"], "GPU pods need a nodeSelector"
    assert any(t["key"] == "nvidia.com/gpu" and t["effect"] == "NoSchedule" for t in pod["tolerations"])
    start = c["startupProbe"]
    assert start["periodSeconds"] * start["failureThreshold"] >= 300, "model load and compile need minutes"
    env = env_of(docs, c)
    assert env[env_name("device")] == "cuda" and env[env_name("max_batch")] == "256"
    assert c["image"].endswith("-cuda")
    pvc = named(docs, "PersistentVolumeClaim", "embedder-models")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"], "replicas on several nodes share the weights"


def test_production_autoscales_embedder_gateway_and_web(trees: Trees) -> None:
    docs = trees("production")
    hpas = {h["spec"]["scaleTargetRef"]["name"]: h for h in of_kind(docs, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"embedder", "gateway", "web"}
    for name, hpa in hpas.items():
        assert hpa["apiVersion"] == "autoscaling/v2" and hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
        assert hpa["spec"]["minReplicas"] >= 2, name
        # The HPA owns the count: an applied one would reset it on every apply.
        assert "replicas" not in deployment(docs, SERVICES[name])["spec"], name
    metrics = {
        (m["type"], m["pods"]["metric"]["name"] if m["type"] == "Pods" else m["resource"]["name"])
        for m in hpas["embedder"]["spec"]["metrics"]
    }
    assert metrics == {("Pods", "audiosearch_embedder_queue_depth"), ("Resource", "cpu")}, metrics
    for name in ("gateway", "web"):
        assert [m["resource"]["name"] for m in hpas[name]["spec"]["metrics"]] == ["cpu"], name
    for name in ("search", "catalog"):
        assert deployment(docs, SERVICES[name])["spec"]["replicas"] >= 2, name


def test_production_budgets_cover_every_service(trees: Trees) -> None:
    docs = trees("production")
    pdbs = of_kind(docs, "PodDisruptionBudget")
    assert all(p["apiVersion"] == "policy/v1" for p in pdbs)
    for svc in SERVICES.values():
        labels = pod_labels(deployment(docs, svc))
        chosen = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        assert chosen, f"no PDB selects {svc.name}"
        assert all(p["spec"].get("maxUnavailable") == 1 for p in chosen), f"{svc.name}: maxUnavailable 1"


def test_production_secrets_are_external_and_required(trees: Trees) -> None:
    docs = trees("production")
    assert not of_kind(docs, "Secret"), "production must not carry a Secret"
    catalog = env_of(docs, main_container(deployment(docs, SERVICES["catalog"]), "catalog"))
    assert catalog[env_name("database_url")] == ("secret", "audiosearch-catalog-db", "url")
    search = main_container(deployment(docs, SERVICES["search"]), "search")
    token = next(e for e in search["env"] if e["name"] == env_name("milvus_token"))
    assert token["valueFrom"]["secretKeyRef"] == {"name": "audiosearch-milvus", "key": "token", "optional": False}
    gw = deployment(docs, SERVICES["gateway"])
    tokens = Path(env_of(docs, main_container(gw, "gateway"))[env_name("auth_tokens_file")])
    secrets = [v for v in pod_spec(gw)["volumes"] if "secret" in v]
    (volume,) = [v for v in secrets if v["secret"]["secretName"] == "audiosearch-gateway-auth"]
    assert not volume["secret"].get("optional"), "a gateway without tokens must not start"
    mount = next(m for m in main_container(gw, "gateway")["volumeMounts"] if m["name"] == volume["name"])
    assert Path(mount["mountPath"]) / volume["secret"]["items"][0]["path"] == tokens


def test_production_tracing_is_on_and_milvus_is_a_cluster(trees: Trees) -> None:
    docs = trees("production")
    env = env_of(docs, main_container(deployment(docs, SERVICES["search"]), "search"))
    assert env[env_name("tracing")] == "otlp" and env[env_name("otlp_endpoint")].startswith("http")
    assert env[env_name("index_type")] == "HNSW"
    (milvus,) = of_kind(trees("production-milvus"), "Milvus")
    assert milvus["apiVersion"] == "milvus.io/v1beta1" and milvus["spec"]["mode"] == "cluster"
    parts = milvus["spec"]["components"]
    assert all(parts[c]["replicas"] >= 2 for c in ("proxy", "queryNode", "dataNode", "streamingNode"))
    # The operator names the proxy Service <name>-milvus in the CR's namespace.
    host = urlsplit(env[env_name("milvus_uri")]).hostname
    assert host.split(".")[:2] == [f"{milvus['metadata']['name']}-milvus", milvus["metadata"]["namespace"]], host
    for svc in ("gateway", "search", "catalog", "web"):
        spread = pod_spec(deployment(docs, SERVICES[svc])).get("topologySpreadConstraints", [])
        assert spread, f"{svc}: replicas should spread over nodes and zones"
