"""The chart's operator hooks: the PrometheusRule's alerts read only metrics the services export and
follow their values; podAnnotations, podLabels, extraEnv, extraVolumes and extraVolumeMounts (global
and per component) land in every pod the chart runs, and the result still passes Kubernetes' schemas."""

from __future__ import annotations

import tomllib

import metric_names
import pytest
import yaml

from .rendering import (
    CHART,
    KUBE_VERSIONS,
    REPO,
    WORKLOAD_KINDS,
    component,
    helm_template,
    kubernetes_validate,
    objects,
    pod_spec,
    pod_template,
    render,
)

ALERTS = {"MercFusionConsumerLag", "MercDegradedEvents", "MercDeadLetters", "MercEventLatencyHigh", "MercNotServing",
          "MercTargetDown"}


def rendered(values: dict, tmp_path) -> list[dict]:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values))
    return [d for d in yaml.safe_load_all(helm_template(path).stdout) if d]


def rules(docs) -> dict[str, dict]:
    [rule] = objects(docs, "PrometheusRule")
    return {r["alert"]: r for group in rule["spec"]["groups"] for r in group["rules"]}


# ---- PrometheusRule ---------------------------------------------------------------------------------

def test_no_prometheus_rule_by_default():
    assert objects(render("default"), "PrometheusRule") == []


def test_every_alert_reads_only_metrics_the_services_export(tmp_path):
    """An alert on a name no service exports never fires: it must fail here instead."""
    alerts = rules(rendered({"prometheusRule": {"enabled": True}}, tmp_path))
    assert set(alerts) == ALERTS
    exported = metric_names.exported()
    families = {metric_names.family(n) for n in exported}
    for name, rule in alerts.items():
        assert metric_names.used(rule["expr"]) <= exported, (name, sorted(metric_names.used(rule["expr"]) - exported))
        named = metric_names.used(" ".join(rule["annotations"].values()))  # what the text tells an operator to look at
        assert {metric_names.family(n) for n in named} <= families, name
    read = set().union(*(metric_names.used(r["expr"]) for r in alerts.values()))
    assert {"merc_fusion_consumer_lag", "merc_fusion_join_outcomes_total", "merc_fusion_dlq_total",
            "merc_fusion_event_latency_seconds_bucket", "merc_serving"} <= read
    assert "up{" in alerts["MercTargetDown"]["expr"]


def test_alerts_select_the_releases_own_services():
    alerts = rules(render("all-features"))
    for name in ("MercFusionConsumerLag", "MercDegradedEvents", "MercDeadLetters", "MercEventLatencyHigh"):
        assert 'namespace="merc", job="merc-fusion"' in alerts[name]["expr"], name
    serving = alerts["MercNotServing"]["expr"]
    for job in ("merc-gateway", "merc-fusion", "merc-encoder-text", "merc-encoder-audio", "merc-encoder-vision"):
        assert job in serving
    assert "triton" not in serving  # Triton exports no merc_serving: up covers it


def test_alert_thresholds_windows_and_labels_follow_the_values():
    """all-features: its own latency quantile, threshold, window, for and severity, team labels on
    every alert, target-down off, the object labelled for Prometheus' ruleSelector."""
    docs = render("all-features")
    [rule] = objects(docs, "PrometheusRule")
    assert rule["metadata"]["labels"]["release"] == "prometheus"
    alerts = rules(docs)
    assert set(alerts) == ALERTS - {"MercTargetDown"}
    latency = alerts["MercEventLatencyHigh"]
    assert latency["expr"].startswith("histogram_quantile(0.95,") and latency["expr"].rstrip().endswith("> 3")
    assert "[5m]" in latency["expr"] and latency["for"] == "5m"
    assert latency["labels"] == {"severity": "critical", "team": "ml-platform"}
    assert all(r["labels"]["team"] == "ml-platform" for r in alerts.values())
    assert alerts["MercFusionConsumerLag"]["expr"].rstrip().endswith("> 1000")
    assert alerts["MercDeadLetters"]["expr"].rstrip().endswith("[15m])) > 0")


def test_an_alert_can_be_turned_off_and_its_severity_wins_over_alert_labels(tmp_path):
    alerts = rules(rendered({"prometheusRule": {"enabled": True, "alertLabels": {"severity": "page", "team": "x"},
                                                "alerts": {"deadLetters": {"enabled": False, "threshold": 0, "window": "15m",
                                                                           "for": "0m", "severity": "warning"}}}}, tmp_path))
    assert "MercDeadLetters" not in alerts
    assert alerts["MercNotServing"]["labels"] == {"severity": "critical", "team": "x"}


@pytest.mark.parametrize("bad", ["prometheusRule.alerts.eventLatency.quantile=1", "prometheusRule.alerts.consumerLag.for=soon",
                                 "prometheusRule.alerts.degradedShare.threshold=2", "prometheusRule.alerts.pageMe=true"])
def test_schema_rejects_a_bad_alert_value(bad):
    proc = helm_template(sets=(bad,), check=False)
    assert proc.returncode != 0 and "schema" in proc.stderr, bad


# ---- pod hooks -------------------------------------------------------------------------------------

def hooked_values() -> dict:
    """Every hook set globally, and the gateway's own on top (one of which replaces a global entry)."""
    volume = {"name": "corp-ca", "configMap": {"name": "corp-ca"}}
    mount = {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True}
    return {
        "podAnnotations": {"example.com/global": "yes", "checksum/config": "not-the-chart's"},
        "podLabels": {"example.com/tier": "ml", "app.kubernetes.io/component": "hijacked"},
        "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://proxy:3128"}, {"name": "SSL_CERT_DIR", "value": "/etc/corp-ca"}],
        "extraVolumes": [volume],
        "extraVolumeMounts": [mount],
        "retention": {"enabled": True, "days": 30},
        "gateway": {"podAnnotations": {"example.com/own": "gateway"}, "podLabels": {"example.com/tier": "edge"},
                    "extraEnv": [{"name": "HTTPS_PROXY", "value": "http://edge-proxy:3128"},
                                 {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}],
                    "extraVolumes": [{"name": "scratch", "emptyDir": {}}],
                    "extraVolumeMounts": [{"name": "scratch", "mountPath": "/scratch"}]},
    }


@pytest.fixture(scope="module")
def hooked(tmp_path_factory):
    return rendered(hooked_values(), tmp_path_factory.mktemp("hooks"))


def test_global_hooks_land_in_every_pod(hooked):
    pods = [o for o in hooked if o["kind"] in WORKLOAD_KINDS]
    assert {component(o) for o in pods} == {"gateway", "fusion", "encoder-text", "encoder-audio", "encoder-vision", "triton",
                                            "migration", "retention", "test"}
    for obj in pods:
        where = component(obj)
        meta, spec = pod_template(obj)["metadata"], pod_spec(obj)
        assert meta["annotations"]["example.com/global"] == "yes", where
        assert meta["labels"]["example.com/tier"] == ("edge" if where == "gateway" else "ml"), where
        assert meta["labels"]["app.kubernetes.io/component"] == where  # the selectors' labels stay the chart's
        assert {"name": "corp-ca", "configMap": {"name": "corp-ca"}} in spec["volumes"], where
        for c in spec["containers"]:
            env = {e["name"]: e for e in c["env"]}
            assert env["SSL_CERT_DIR"]["value"] == "/etc/corp-ca", where
            assert env["HTTPS_PROXY"]["value"] == ("http://edge-proxy:3128" if where == "gateway" else "http://proxy:3128"), where
            assert [e["name"] for e in c["env"]].count("HTTPS_PROXY") == 1, where
            assert {"name": "corp-ca", "mountPath": "/etc/corp-ca", "readOnly": True} in c["volumeMounts"], where


def test_a_components_own_hooks_stay_in_its_pods(hooked):
    for obj in (o for o in hooked if o["kind"] in WORKLOAD_KINDS):
        where = component(obj)
        meta, spec = pod_template(obj)["metadata"], pod_spec(obj)
        own = where == "gateway"
        assert (meta["annotations"].get("example.com/own") == "gateway") == own, where
        assert any(v["name"] == "scratch" for v in spec["volumes"]) == own, where
        [c] = spec["containers"]
        assert any(e["name"] == "POD_IP" for e in c["env"]) == own, where
        assert any(m["mountPath"] == "/scratch" for m in c["volumeMounts"]) == own, where


def test_the_charts_own_annotations_are_kept(hooked):
    """checksum/config rolls the services on a config change; hook annotations keep the test a test."""
    for obj in (o for o in hooked if o["kind"] in WORKLOAD_KINDS):
        annotations = pod_template(obj)["metadata"]["annotations"]
        if component(obj) in ("gateway", "fusion", "encoder-text", "encoder-audio", "encoder-vision"):
            assert annotations["checksum/config"] != "not-the-chart's", component(obj)
        if obj["kind"] == "Pod":
            assert annotations["helm.sh/hook"] == "test"


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
def test_hooked_manifests_match_the_kubernetes_schemas(hooked, kube_version):
    kv = kubernetes_validate()
    for obj in hooked:
        if obj["kind"] in WORKLOAD_KINDS:
            kv.validate(obj, kube_version, strict=True)


def test_per_encoder_hooks(tmp_path):
    docs = rendered({"encoders": {"audio": {"extraEnv": [{"name": "AUDIO_ONLY", "value": "1"}],
                                            "podLabels": {"example.com/modality": "audio"}}}}, tmp_path)
    for obj in (o for o in docs if o["kind"] == "Deployment" and component(o).startswith("encoder-")):
        audio = component(obj) == "encoder-audio"
        [c] = pod_spec(obj)["containers"]
        assert any(e["name"] == "AUDIO_ONLY" for e in c["env"]) == audio
        assert (pod_template(obj)["metadata"]["labels"].get("example.com/modality") == "audio") == audio


def test_without_hooks_triton_has_no_env():
    [triton] = [o for o in render("default") if o["kind"] == "Deployment" and component(o) == "triton"]
    assert "env" not in pod_spec(triton)["containers"][0]


@pytest.mark.parametrize("bad", ['extraEnv=[{"value": "no name"}]', 'extraVolumeMounts=[{"name": "v", "mountPath": "relative"}]',
                                 'gateway.extraVolumes={"name": "v"}', 'podLabels={"a": 1}'])
def test_schema_rejects_a_bad_hook(bad):
    proc = helm_template(extra=("--set-json", bad), check=False)
    assert proc.returncode != 0 and "schema" in proc.stderr, bad



def test_chart_metadata_tells_the_projects_licence():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["annotations"]["artifacthub.io/license"] == project["license"]
    assert chart["maintainers"] and chart["keywords"]
