"""The deployment checks' tools and renders: helm (built by deploy/tools.sh into .tools/bin), the chart
rendered once per values file, docker-compose.yml as compose resolves it, and each workload's
environment as its containers would see it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from functools import cache, lru_cache
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy/helm/merc"
CI_VALUES = REPO / "deploy/helm/ci"
COMPOSE = REPO / "docker-compose.yml"
TOOLS = REPO / ".tools/bin"
VENV_BIN = Path(sys.executable).parent

RELEASE = "merc"
NAMESPACE = "merc"
# The chart's kubeVersion floor and the version helm 3.19 renders for by default.
KUBE_VERSIONS = ("1.29.0", "1.34.0")

# The values files CI renders: the defaults and deploy/helm/ci/*.yaml (invalid.yaml apart).
VALUES = {
    "default": None,
    "gpu": CI_VALUES / "gpu.yaml",
    "all-features": CI_VALUES / "all-features.yaml",
    "text-only": CI_VALUES / "text-only.yaml",
    "secure-external": CI_VALUES / "secure-external.yaml",
}
INVALID_VALUES = CI_VALUES / "invalid.yaml"

# Operators' custom resources: kubernetes-validate has no schema for them. KEDA's and the Prometheus
# operator's are checked with the validators @kubernetes-models generates from their CRDs (npm);
# Strimzi's and CloudNativePG's have no offline schema here and are checked for shape only.
CUSTOM_RESOURCE_GROUPS = ("keda.sh", "monitoring.coreos.com", "kafka.strimzi.io", "postgresql.cnpg.io")
CRD_VALIDATED = {"ScaledObject", "TriggerAuthentication", "ServiceMonitor", "PrometheusRule"}
CRD_MODELS = REPO / ".tools/crd-models"

WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job", "CronJob", "Pod")


def missing(message: str):
    """`make test` (MERC_REQUIRE_STACK=1) fails on a missing tool; elsewhere the check is skipped."""
    message += " (run deploy/tools.sh, or `make deploy-tools`)"
    if os.environ.get("MERC_REQUIRE_STACK") == "1":
        pytest.fail(message)
    pytest.skip(message)


def tool(name: str) -> str:
    for candidate in (TOOLS / name, VENV_BIN / name):
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    missing(f"{name} not found in {TOOLS} or {VENV_BIN}")
    raise AssertionError("unreachable")


def kubernetes_validate():
    """The kubernetes-validate package (Kubernetes' JSON schemas, offline)."""
    try:
        import kubernetes_validate
    except ImportError:
        missing("kubernetes-validate is not installed in this virtualenv")
    return kubernetes_validate


def validate_custom_resources(objs: list[dict]) -> list[dict]:
    """[{kind, name, error}] from tests/deploy/validate_crds.mjs (node + the @kubernetes-models validators)."""
    node = shutil.which("node")
    if not node:
        missing("node is not on PATH")
    if not (CRD_MODELS / ".installed").is_file():
        missing(f"no CRD validators in {CRD_MODELS}")
    proc = subprocess.run([node, str(Path(__file__).with_name("validate_crds.mjs")), str(CRD_MODELS)],
                          input=json.dumps(objs), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def run(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout, cwd=REPO)
    if check and proc.returncode != 0:
        pytest.fail(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


def values_args(values: Path | None, sets: tuple[str, ...] = ()) -> list[str]:
    args = ["-f", str(values)] if values else []
    for s in sets:
        args += ["--set", s]
    return args


def helm_template(values: Path | None = None, sets: tuple[str, ...] = (), check: bool = True,
                  kube_version: str = KUBE_VERSIONS[-1], chart: Path = CHART, extra: tuple[str, ...] = ()):
    return run(tool("helm"), "template", RELEASE, str(chart), "--namespace", NAMESPACE, "--kube-version", kube_version,
               *values_args(values, sets), *extra, check=check)


@cache
def render(name: str, kube_version: str = KUBE_VERSIONS[-1]) -> tuple[dict, ...]:
    """Every object `helm template` renders for one of VALUES (hooks and test hooks included)."""
    out = helm_template(VALUES[name], kube_version=kube_version).stdout
    return tuple(d for d in yaml.safe_load_all(out) if d)


def objects(docs, kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def component(obj: dict) -> str:
    return obj["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_template(obj: dict) -> dict:
    """The pod of a workload: a Pod itself, a CronJob's job template's pod, or spec.template."""
    if obj["kind"] == "Pod":
        return obj
    if obj["kind"] == "CronJob":
        return obj["spec"]["jobTemplate"]["spec"]["template"]
    return obj["spec"]["template"]


def pod_spec(obj: dict) -> dict:
    return pod_template(obj)["spec"]


def pod_labels(obj: dict) -> dict:
    return pod_template(obj)["metadata"]["labels"]


def is_hook(obj: dict) -> bool:
    return "helm.sh/hook" in (obj["metadata"].get("annotations") or {})


def effective_values(name: str) -> dict:
    """values.yaml overlaid with the named values file (maps merge, everything else replaces)."""
    def merge(base, over):
        for k, v in over.items():
            base[k] = merge(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
        return base

    values = yaml.safe_load((CHART / "values.yaml").read_text())
    if VALUES[name]:
        merge(values, yaml.safe_load(VALUES[name].read_text()))
    return values


# ---- environments ---------------------------------------------------------------------------------

SECRET = "<secret>"
FIELD = "<field>"


def container_env(docs, container: dict) -> dict[str, str]:
    """NAME -> value for one container: its envFrom ConfigMaps resolved, literal values as given,
    SECRET / FIELD for values from a Secret or the downward API."""
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in objects(docs, "ConfigMap")}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        if "configMapRef" in source:
            env.update(config_maps[source["configMapRef"]["name"]])
        else:  # a secretRef would hide its names from this check
            raise AssertionError(f"unexpected envFrom source {source}")
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "secretKeyRef" in var.get("valueFrom", {}):
            env[var["name"]] = SECRET
        else:
            env[var["name"]] = FIELD
    return env


def chart_envs(docs) -> dict[str, dict[str, str]]:
    """component -> environment of its container, for every workload running the MERC image
    (all but Triton)."""
    envs = {}
    for obj in docs:
        if obj["kind"] in WORKLOAD_KINDS and component(obj) != "triton":
            [c] = pod_spec(obj)["containers"]
            envs[component(obj)] = container_env(docs, c)
    return envs


@lru_cache(maxsize=1)
def compose_config() -> dict:
    """docker-compose.yml as `docker compose config` resolves it (anchors, merges, defaults)."""
    out = run(tool("docker-compose"), "-f", str(COMPOSE), "config", "--format", "json").stdout
    return json.loads(out)


def compose_envs() -> dict[str, dict[str, str]]:
    """compose service -> environment, for the services that run the MERC image."""
    return {name: dict(s.get("environment") or {}) for name, s in compose_config()["services"].items()
            if s.get("image", "").startswith("merc:")}


# ---- the local stack's own configuration ----------------------------------------------------------

def local_topics() -> dict[str, tuple[str, str]]:
    """deploy/local/kafka.sh's topics: suffix -> (partitions, config); partitions is "P" where it uses
    MERC_KAFKA_PARTITIONS (the equal-partition topics)."""
    text = (REPO / "deploy/local/kafka.sh").read_text()
    block = re.search(r"^TOPICS=\((.*?)^\)", text, re.S | re.M).group(1)
    topics = {}
    for spec in re.findall(r'"([^"]+)"', block):
        name, parts, cfg = spec.split(":", 2)
        assert name.startswith("$P."), spec
        topics[name[3:]] = ("P" if parts == "$MERC_KAFKA_PARTITIONS" else parts, cfg)
    return topics


def local_default(name: str) -> str:
    """A default from deploy/local/env.sh (NAME="${NAME:-default}")."""
    m = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"', (REPO / "deploy/local/env.sh").read_text(), re.M)
    assert m, name
    return m.group(1)
