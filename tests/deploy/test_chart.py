"""The Helm chart: linted, rendered with each CI values file, every manifest validated against the
Kubernetes JSON schemas in strict mode, bad values refused, and the rendered objects checked for
what the deployment promises (probes, security, network isolation, hooks, scaling bounds)."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import PurePosixPath

import pytest
import yaml

from .rendering import (
    CHART,
    CRD_VALIDATED,
    CUSTOM_RESOURCE_GROUPS,
    INVALID_VALUES,
    KUBE_VERSIONS,
    REPO,
    VALUES,
    WORKLOAD_KINDS,
    component,
    container_env,
    effective_values,
    helm_template,
    is_hook,
    kubernetes_validate,
    local_topics,
    objects,
    pod_labels,
    pod_spec,
    render,
    run,
    tool,
    validate_custom_resources,
    values_args,
)

# What each values file renders (kind -> count), hooks and the `helm test` objects included.
EXPECTED_KINDS = {
    "default": {"ConfigMap": 1, "Deployment": 5, "HorizontalPodAutoscaler": 4, "Job": 1, "NetworkPolicy": 8, "Pod": 1,
                "PodDisruptionBudget": 6, "Service": 6, "ServiceAccount": 2, "StatefulSet": 1},
    "gpu": {"ConfigMap": 1, "Deployment": 5, "HorizontalPodAutoscaler": 4, "Job": 1, "NetworkPolicy": 8, "Pod": 1,
            "PodDisruptionBudget": 6, "Service": 6, "ServiceAccount": 2, "StatefulSet": 1},
    "all-features": {"Cluster": 1, "ConfigMap": 1, "CronJob": 1, "Deployment": 5, "HorizontalPodAutoscaler": 5, "Ingress": 2,
                     "Job": 1, "Kafka": 1, "KafkaNodePool": 1, "KafkaTopic": 6, "NetworkPolicy": 9, "Pod": 1,
                     "PodDisruptionBudget": 6, "PrometheusRule": 1, "ScaledObject": 1, "Service": 6, "ServiceAccount": 2,
                     "ServiceMonitor": 1, "StatefulSet": 1},
    "text-only": {"ConfigMap": 1, "Deployment": 3, "Job": 1, "NetworkPolicy": 6, "Pod": 1, "Service": 4, "ServiceAccount": 2,
                  "StatefulSet": 1},
    "secure-external": {"ConfigMap": 1, "CronJob": 1, "Deployment": 4, "HorizontalPodAutoscaler": 4, "Job": 1,
                        "NetworkPolicy": 8, "Pod": 1, "PodDisruptionBudget": 5, "ScaledObject": 1, "Secret": 2, "Service": 5,
                        "ServiceAccount": 2, "StatefulSet": 1, "TriggerAuthentication": 1},
}

ENCODERS = ("text", "audio", "vision")


def custom_resource(obj: dict) -> bool:
    return obj["apiVersion"].split("/")[0] in CUSTOM_RESOURCE_GROUPS


# ---- lint, render, validate -----------------------------------------------------------------------

@pytest.mark.parametrize("name", VALUES)
def test_helm_lint_strict(name):
    proc = run(tool("helm"), "lint", "--strict", str(CHART), *values_args(VALUES[name]), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("name", VALUES)
def test_rendered_manifests_match_the_kubernetes_schemas(name, kube_version):
    """Strict: an unknown or misplaced field is an error. Custom resources are skipped (no schema)."""
    kv = kubernetes_validate()
    errors, skipped, validated = [], [], 0
    for obj in render(name, kube_version):
        if custom_resource(obj):
            assert {"apiVersion", "kind", "metadata", "spec"} <= set(obj), obj
            skipped.append(obj["kind"])
            continue
        try:
            kv.validate(obj, kube_version, strict=True)
            validated += 1
        except kv.ValidationError as e:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {'/'.join(map(str, e.path))}: {e.message}")
    assert not errors, "\n".join(errors)
    assert validated >= 10
    expected_custom = {k for k in EXPECTED_KINDS[name] if k in
                       ("Cluster", "Kafka", "KafkaNodePool", "KafkaTopic", "PrometheusRule", "ScaledObject", "ServiceMonitor",
                        "TriggerAuthentication")}
    assert set(skipped) == expected_custom


@pytest.mark.parametrize("name", [n for n in VALUES if CRD_VALIDATED & set(EXPECTED_KINDS[n])])
def test_keda_and_prometheus_resources_match_their_crds(name):
    objs = [o for o in render(name) if o["kind"] in CRD_VALIDATED]
    results = validate_custom_resources(objs)
    assert [r["kind"] for r in results] == [o["kind"] for o in objs]
    assert [f"{r['kind']}/{r['name']}: {r['error']}" for r in results if r["error"]] == []


def test_the_crd_validators_reject_a_bad_scaled_object():
    so = next(o for o in render("all-features") if o["kind"] == "ScaledObject")
    bad = yaml.safe_load(yaml.safe_dump(so))
    bad["spec"]["maxReplicaCount"] = "six"
    [result] = validate_custom_resources([bad])
    assert "maxReplicaCount must be integer" in result["error"]


def test_the_validator_is_strict():
    """A misspelt field must fail, or the check above proves nothing."""
    kv = kubernetes_validate()
    deployment = next(o for o in render("default") if o["kind"] == "Deployment")
    bad = yaml.safe_load(yaml.safe_dump(deployment))
    bad["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kv.ValidationError):
        kv.validate(bad, KUBE_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("name", VALUES)
def test_rendered_kinds(name):
    assert dict(sorted(Counter(o["kind"] for o in render(name)).items())) == EXPECTED_KINDS[name]


@pytest.mark.parametrize("name", VALUES)
def test_names_are_unique_per_kind(name):
    keys = Counter((o["kind"], o["metadata"]["name"]) for o in render(name))
    assert [k for k, n in keys.items() if n > 1] == []


@pytest.mark.parametrize("name", VALUES)
def test_notes_render(name, tmp_path):
    """NOTES.txt is a template too: render it through a scratch copy of the chart."""
    chart = tmp_path / "merc"
    shutil.copytree(CHART, chart)
    (chart / "templates/zz-notes.yaml").write_text(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n"
        '{{ include (print $.Template.BasePath "/NOTES.txt") . | indent 4 }}\n')
    out = helm_template(VALUES[name], chart=chart, extra=("--show-only", "templates/zz-notes.yaml")).stdout
    notes = yaml.safe_load(out)["data"]["notes"]
    assert "merc-gateway:28050" in notes and "helm test merc" in notes
    # How to make an API key, whether keys are on or off; nothing claims a value is unused.
    assert "merc keys new TENANT" in notes and "not used yet" not in notes
    values = effective_values(name)
    if values["tls"]["enabled"]:
        assert "IP address 127.0.0.1" in notes and "merc-encoder-text" in notes
    if values["retention"]["enabled"]:
        assert f"older than {values['retention']['days']} days" in notes
    # The timeline page: how to reach it (port-forward), or that it is off.
    http_port = values["gateway"]["httpPort"]
    if http_port:
        scheme = "https" if values["tls"]["enabled"] else "http"
        assert f"port-forward svc/merc-gateway {http_port}:{http_port}" in notes
        assert f"open {scheme}://127.0.0.1:{http_port}/" in notes
        assert ("merc-gateway-http:" in notes) == values["gateway"]["httpIngress"]["enabled"]
    else:
        assert "off (gateway.httpPort: 0)" in notes and "port-forward svc/merc-gateway 0" not in notes


# ---- values.schema.json and the chart's own checks ------------------------------------------------

def test_invalid_values_file_is_rejected():
    """deploy/helm/ci/invalid.yaml: helm refuses it and names every violation."""
    for command in (("lint", str(CHART)), ("template", "merc", str(CHART))):
        proc = run(tool("helm"), *command, "-f", str(INVALID_VALUES), check=False)
        out = proc.stdout + proc.stderr
        assert proc.returncode != 0, out
        assert "don't meet the specifications of the schema" in out
        for path in ("/encoders/text", "/kafka/securityProtocol", "/kafka/partitions", "/database/url",
                     "/triton/gpu/count", "/gateway/service/type", "/config/logLevel", "/tls/existingSecret",
                     "/retention/days", "/retention/schedule"):
            assert f"at '{path}'" in out, f"{path} not reported:\n{out}"


BAD_VALUES = [
    "unknownKey=1",
    "encoders.audio.replicas=2",
    "encoders.vision.enabled=maybe",
    "kafka.bootstrap=kafka",
    "kafka.securityProtocol=TLS",
    "kafka.sasl.mechanism=GSSAPI",
    "kafka.topicPrefix=bad prefix",
    "database.url=postgresql://merc:merc@db/merc",
    "config.moodDecay=1.5",
    "config.joinWindowMs=-1",
    "triton.modelRepository.source=s3",
    "triton.enabled=false",
    "triton.extraArgs[0]=model-repository=/x",
    "image.pullPolicy=Sometimes",
    "image.digest=latest",
    "fusion.replicaCount=0",
    "fusion.keda.lagThreshold=0",
    "gateway.ingress.hosts[0].paths[0].pathType=Glob",
    "encoders.text.resources.requests.cpu=lots",
    "serviceMonitor.interval=often",
    "apiKeys.key=",
    "apiKeys.testKey.extra=1",
    "tls.enabled=yes",
    "tls.mutual=1",
    "tls.caKey=",
    "privacy.pseudonymSecret.value=too-short",
    "privacy.embeddingKeys.value=0123456789abcdef-no-id",
    "privacy.embeddingKeys.value=k1:too-short",
    "retention.days=-1",
    "retention.schedule=@sometimes",
    "retention.timeZone=Central European Time",
    "retention.backoffLimit=-1",
    "networkPolicy.metrics.from=monitoring",
    "gateway.httpPort=-1",
    "gateway.httpPort=65536",
    "gateway.httpIngress.enabled=on",
    "triton.textTier=large",
]


@pytest.mark.parametrize("bad", BAD_VALUES)
def test_schema_rejects_a_bad_value(bad):
    proc = helm_template(sets=(bad,), check=False)
    assert proc.returncode != 0, f"--set {bad} was accepted"
    assert "schema" in proc.stderr, proc.stderr


def test_schema_requires_a_sasl_protocol_and_username_with_a_mechanism():
    proc = helm_template(sets=("kafka.sasl.mechanism=PLAIN", "kafka.sasl.password=x"), check=False)
    assert proc.returncode != 0
    assert "/kafka/securityProtocol" in proc.stderr and "/kafka/sasl/username" in proc.stderr


@pytest.mark.parametrize("sets,path", [
    (("tls.enabled=true",), "/tls/existingSecret"),
    (("retention.enabled=true",), "/retention/days"),
], ids=["tls-secret", "retention-days"])
def test_schema_requires_what_an_enabled_feature_needs(sets, path):
    proc = helm_template(sets=sets, check=False)
    assert proc.returncode != 0 and f"at '{path}'" in proc.stderr, proc.stderr
    helm_template(sets=(*sets, "tls.existingSecret=merc-grpc-tls", "retention.days=1"))


def test_schema_requires_the_page_for_its_ingress():
    """gateway.httpIngress needs the page on (gateway.httpPort > 0); httpPort 0 alone is fine."""
    proc = helm_template(sets=("gateway.httpIngress.enabled=true", "gateway.httpPort=0"), check=False)
    assert proc.returncode != 0 and "at '/gateway/httpPort'" in proc.stderr, proc.stderr
    helm_template(sets=("gateway.httpPort=0",))
    helm_template(sets=("gateway.httpIngress.enabled=true",))


CROSS_FIELD = [
    (("fusion.replicaCount=4",), "exceeds kafka.partitions"),
    (("fusion.keda.enabled=true", "fusion.keda.maxReplicaCount=4"), "exceeds kafka.partitions"),
    (("encoders.text.enabled=false", "encoders.audio.enabled=false", "encoders.vision.enabled=false"), "enable at least one"),
    (("triton.modelRepository.source=volume",), "triton.modelRepository.volume"),
    (("database.existingSecret=",), "database.existingSecret"),
    (("database.url=postgresql+psycopg://u:p@h/d",), "not both"),
    (("kafka.securityProtocol=SASL_SSL",), "set kafka.sasl.mechanism"),
    (("kafka.securityProtocol=SASL_SSL", "kafka.sasl.mechanism=PLAIN", "kafka.sasl.username=u"), "kafka.sasl.existingSecret"),
    (("strimzi.cluster.create=true", "strimzi.cluster.replicas=1", "strimzi.topics.create=true"), "exceeds strimzi.cluster.replicas"),
    (("apiKeys.existingSecret=merc-api-keys",), "helm test needs a key too"),
    (("privacy.pseudonymSecret.existingSecret=s", "privacy.pseudonymSecret.value=0123456789abcdef"),
     "set either existingSecret or value, not both"),
    (("privacy.embeddingKeys.existingSecret=s", "privacy.embeddingKeys.value=k1:0123456789abcdef"),
     "privacy.embeddingKeys: set either existingSecret or value, not both"),
    (("privacy.pseudonymSecret.existingSecret=s",), "privacy.pseudonymSecret is set: set privacy.embeddingKeys too"),
    (("gateway.httpPort=28050",), "gateway.httpPort (28050) must differ from gateway.port and gateway.metricsPort"),
    (("gateway.httpPort=29090",), "gateway.httpPort (29090) must differ from gateway.port and gateway.metricsPort"),
]


@pytest.mark.parametrize("sets,message", CROSS_FIELD, ids=[m for _, m in CROSS_FIELD])
def test_cross_field_rules_fail_rendering(sets, message):
    proc = helm_template(sets=sets, check=False)
    assert proc.returncode != 0, f"{sets} rendered"
    assert message in proc.stderr, proc.stderr


# ---- what the rendered objects promise ------------------------------------------------------------

def workloads(name):
    return [o for o in render(name) if o["kind"] in WORKLOAD_KINDS]


@pytest.mark.parametrize("name", VALUES)
def test_every_pod_is_locked_down(name):
    for obj in workloads(name):
        spec = pod_spec(obj)
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["runAsUser"] > 0, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert spec["automountServiceAccountToken"] is False, where
        for c in spec["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, where
            assert sc["readOnlyRootFilesystem"] is True, where
            assert sc["capabilities"]["drop"] == ["ALL"], where
            assert c["resources"]["requests"]["memory"] and c["resources"]["limits"]["memory"], where
            assert any(m["mountPath"] == "/tmp" for m in c["volumeMounts"]), f"{where}: no writable /tmp"


@pytest.mark.parametrize("name", VALUES)
def test_hooks_that_succeed_leave_nothing_for_uninstall(name):
    """Helm never deletes hook objects, not even on `helm uninstall`: each hook (the migration and
    everything it brings, the helm test and its NetworkPolicy) is deleted once it succeeds."""
    for obj in (o for o in render(name) if is_hook(o)):
        policy = obj["metadata"]["annotations"].get("helm.sh/hook-delete-policy", "")
        assert "hook-succeeded" in policy.split(","), f"{obj['kind']}/{obj['metadata']['name']}: {policy!r}"


@pytest.mark.parametrize("name", VALUES)
def test_no_pod_gets_service_link_variables(name):
    """Kubernetes' service links give every pod of the namespace <SERVICE>_PORT=tcp://ip:port for each
    Service: with a release named merc that is MERC_GATEWAY_PORT, MERC_FUSION_PORT, ..., which the
    services read as their settings (found on a real cluster: every pod but the gateway crashed)."""
    for obj in workloads(name):
        assert pod_spec(obj)["enableServiceLinks"] is False, f"{obj['kind']}/{obj['metadata']['name']}"


@pytest.mark.parametrize("name", VALUES)
def test_services_are_probed_on_grpc_health_and_triton_on_its_ready_endpoint(name):
    """Native gRPC probes; with TLS (which they do not speak) merc.runtime.healthcheck over TLS, exec'd in the pod."""
    tls = effective_values(name)["tls"]["enabled"]
    assert (REPO / "services/merc/runtime/healthcheck.py").is_file()
    for obj in render(name):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        [c] = pod_spec(obj)["containers"]
        if component(obj) == "triton":
            assert c["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
            assert c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
            assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
            continue
        port = c["ports"][0]["containerPort"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if tls:
                assert "grpc" not in c[probe], (obj["metadata"]["name"], probe)
                assert c[probe]["exec"]["command"] == ["python", "-m", "merc.runtime.healthcheck", f"127.0.0.1:{port}"]
                assert c[probe]["timeoutSeconds"] >= 5, "an exec probe starts a Python interpreter"
            else:
                assert c[probe]["grpc"] == {"port": port}, (obj["metadata"]["name"], probe)


@pytest.mark.parametrize("name", VALUES)
def test_one_deployment_service_and_hpa_per_enabled_encoder(name):
    docs = render(name)
    values = effective_values(name)
    for m in ENCODERS:
        comp = f"encoder-{m}"
        enc = values["encoders"][m]
        deployments = [o for o in objects(docs, "Deployment") if component(o) == comp]
        services = [o for o in objects(docs, "Service") if component(o) == comp]
        hpas = [o for o in objects(docs, "HorizontalPodAutoscaler") if component(o) == comp]
        if not enc["enabled"]:
            assert deployments == services == hpas == []
            continue
        [d], [s] = deployments, services
        assert s["spec"]["selector"] == d["spec"]["selector"]["matchLabels"]
        # Headless: the gateway balances over the replicas' addresses (one ClusterIP would get every call).
        assert s["spec"]["clusterIP"] == "None"
        [c] = pod_spec(d)["containers"]
        assert c["args"] == ["serve", "encoder"]
        env = {e["name"]: e.get("value") for e in c["env"]}
        assert env["MERC_ENCODER_MODALITY"] == m and env["MERC_ENCODER_PORT"] == str(enc["port"])
        if enc["autoscaling"]["enabled"]:
            [h] = hpas
            assert h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": d["metadata"]["name"]}
            assert "replicas" not in d["spec"], "the HPA owns the replica count"
        else:
            assert hpas == [] and d["spec"]["replicas"] == enc["replicaCount"]


def test_gateway_is_told_which_encoders_exist():
    [gw] = [o for o in objects(render("text-only"), "Deployment") if component(o) == "gateway"]
    env = {e["name"]: e.get("value") for e in pod_spec(gw)["containers"][0]["env"]}
    assert env["MERC_TEXT_ENCODER_URL"] == "merc-encoder-text:28061"
    assert env["MERC_AUDIO_ENCODER_URL"] == "" and env["MERC_VISION_ENCODER_URL"] == ""


def images_by_component(*sets: str) -> dict[str, set[str]]:
    out = yaml.safe_load_all(helm_template(sets=sets).stdout)
    images: dict[str, set[str]] = {}
    for o in (d for d in out if d and d["kind"] in WORKLOAD_KINDS):
        for c in pod_spec(o)["containers"]:
            images.setdefault(component(o), set()).add(c["image"])
    return images


def test_each_deployable_can_run_its_own_image():
    """image.<component> (the EXTRA=gateway|fusion|encoder builds) replaces the one image where it names a repository."""
    digest = "sha256:" + "0" * 64
    own = images_by_component("image.gateway.repository=merc-gw", "image.fusion.repository=merc-fu", "image.fusion.tag=t1",
                              "image.encoder.repository=merc-enc", "image.encoder.digest=" + digest,
                              "image.jobs.repository=merc-gw", "image.test.repository=merc-enc")
    app = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    assert own["gateway"] == own["migration"] == {f"merc-gw:{app}"}
    assert own["fusion"] == {"merc-fu:t1"}
    assert all(own[f"encoder-{m}"] == {f"merc-enc@{digest}"} for m in ENCODERS)
    assert own["test"] == {f"merc-enc:{app}"}
    # Unset: the one image runs everything but Triton.
    one = images_by_component("image.digest=" + digest)
    assert {c: i for c, i in one.items() if c != "triton"} == {c: {f"registry.example.com/merc/merc@{digest}"} for c in one if c != "triton"}


@pytest.mark.parametrize("name", VALUES)
def test_fusion_is_a_statefulset_bounded_by_the_partitions(name):
    docs, values = render(name), effective_values(name)
    [sts] = objects(docs, "StatefulSet")
    [c] = pod_spec(sts)["containers"]
    instance = next(e for e in c["env"] if e["name"] == "MERC_FUSION_INSTANCE")
    assert instance["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    partitions = values["kafka"]["partitions"]
    scaled = objects(docs, "ScaledObject")
    if values["fusion"]["keda"]["enabled"]:
        [so] = scaled
        assert "replicas" not in sts["spec"]
        assert so["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": sts["metadata"]["name"]}
        assert so["spec"]["maxReplicaCount"] <= partitions
        [trigger] = so["spec"]["triggers"]
        assert trigger["type"] == "kafka"
        assert trigger["metadata"]["consumerGroup"] == values["config"]["fusionGroup"]
        assert trigger["metadata"]["allowIdleConsumers"] == "false"
    else:
        assert scaled == [] and sts["spec"]["replicas"] <= partitions


def test_keda_authenticates_like_the_services():
    docs = render("secure-external")
    [auth] = objects(docs, "TriggerAuthentication")
    [so] = objects(docs, "ScaledObject")
    assert so["spec"]["triggers"][0]["authenticationRef"]["name"] == auth["metadata"]["name"]
    assert so["spec"]["triggers"][0]["metadata"]["sasl"] == "scram_sha512"
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"password", "ca"}


@pytest.mark.parametrize("name", VALUES)
def test_migration_is_a_pre_install_pre_upgrade_hook(name):
    docs, values = render(name), effective_values(name)
    [job] = objects(docs, "Job")
    ann = job["metadata"]["annotations"]
    expected = "post-install,pre-upgrade" if values["cloudnativepg"]["enabled"] else "pre-install,pre-upgrade"
    assert ann["helm.sh/hook"] == expected
    [c] = pod_spec(job)["containers"]
    assert c["args"] == ["db", "upgrade"]
    # Whatever the Job needs exists before it: hooks of a lower weight, or Secrets the user made.
    sa = pod_spec(job)["serviceAccountName"]
    [hook_sa] = [o for o in objects(docs, "ServiceAccount") if o["metadata"]["name"] == sa]
    assert hook_sa["metadata"]["annotations"]["helm.sh/hook"] == expected
    assert int(hook_sa["metadata"]["annotations"]["helm.sh/hook-weight"]) < int(ann["helm.sh/hook-weight"])
    chart_secrets = {o["metadata"]["name"]: o for o in objects(docs, "Secret")}
    for var in c["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] in chart_secrets:
            assert is_hook(chart_secrets[ref["name"]]), f"{ref['name']} does not exist yet at {expected}"


@pytest.mark.parametrize("name", VALUES)
def test_helm_test_sends_an_utterance_through_the_gateway(name):
    docs = render(name)
    [pod] = objects(docs, "Pod")
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["args"][0]
    m = re.search(r"merc analyze --remote (\S+):(\d+) ", script)
    assert m, script
    [gw] = [o for o in objects(docs, "Service") if component(o) == "gateway"]
    assert (m.group(1), int(m.group(2))) == (gw["metadata"]["name"], gw["spec"]["ports"][0]["port"])


def test_gpu_values_give_triton_a_gpu_and_the_models_from_a_volume():
    [triton] = [o for o in objects(render("gpu"), "Deployment") if component(o) == "triton"]
    spec = pod_spec(triton)
    [c] = spec["containers"]
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "--allow-gpu-metrics=true" in c["args"]
    assert "--model-repository=/opt/merc/model_repository" in c["args"]
    mount = next(m for m in c["volumeMounts"] if m["name"] == "model-repository")
    assert mount["mountPath"] == "/opt/merc/model_repository"
    volume = next(v for v in spec["volumes"] if v["name"] == "model-repository")
    assert volume["persistentVolumeClaim"]["claimName"] == "merc-models"
    assert spec["runtimeClassName"] == "nvidia"
    [cpu] = [o for o in objects(render("default"), "Deployment") if component(o) == "triton"]
    assert "nvidia.com/gpu" not in pod_spec(cpu)["containers"][0]["resources"].get("limits", {})


@pytest.mark.parametrize("name", VALUES)
def test_triton_loads_the_gpu_model_configs_exactly_when_it_gets_a_gpu(name):
    triton = [o for o in objects(render(name), "Deployment") if component(o) == "triton"]
    if not triton:
        pytest.skip(f"{name}: Triton runs outside the chart")
    [c] = pod_spec(triton[0])["containers"]
    gpu = effective_values(name)["triton"]["gpu"]
    assert ("--model-config-name=gpu" in c["args"]) == gpu["enabled"]
    assert (gpu["resourceName"] in c["resources"].get("limits", {})) == gpu["enabled"]


@pytest.mark.parametrize(("sets", "name"), [((), None), (("triton.gpu.enabled=true",), "gpu"),
                                           (("triton.textTier=mpnet",), "mpnet"),
                                           (("triton.gpu.enabled=true", "triton.textTier=mpnet"), "gpu-mpnet")])
def test_triton_loads_the_config_of_its_device_and_text_tier(sets, name):
    docs = tuple(yaml.safe_load_all(helm_template(sets=sets).stdout))
    [triton] = [o for o in objects(docs, "Deployment") if component(o) == "triton"]
    args = [a for a in pod_spec(triton)["containers"][0]["args"] if a.startswith("--model-config-name")]
    assert args == ([f"--model-config-name={name}"] if name else [])


def test_ingress_routes_grpc_to_the_gateway_with_tls():
    docs = render("all-features")
    [ing] = [o for o in objects(docs, "Ingress") if o["metadata"]["name"] == "merc-gateway"]
    [gw] = [o for o in objects(docs, "Service") if component(o) == "gateway"]
    assert ing["spec"]["tls"] == [{"hosts": ["merc.example.com"], "secretName": "merc-tls"}]
    backend = ing["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": gw["metadata"]["name"], "port": {"name": "grpc"}}
    # gRPC to the gateway, over TLS when the gateway serves TLS.
    tls = effective_values("all-features")["tls"]
    annotations = ing["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == ("GRPCS" if tls["enabled"] else "GRPC")
    if tls["mutual"]:
        assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-secret"]


@pytest.mark.parametrize("name", VALUES)
def test_the_page_has_its_own_ingress_to_the_http_port(name):
    """gateway.httpIngress: a second Ingress, <gateway>-http, to the Service port `http` (the page speaks
    HTTP/1.1, the gRPC Ingress's backend protocol is GRPC/GRPCS); HTTPS to the gateway with TLS."""
    docs, values = render(name), effective_values(name)
    page = values["gateway"]["httpIngress"]
    ingresses = {o["metadata"]["name"]: o for o in objects(docs, "Ingress")}
    assert set(ingresses) == {n for n, on in (("merc-gateway", values["gateway"]["ingress"]["enabled"]),
                                              ("merc-gateway-http", page["enabled"])) if on}
    if not page["enabled"]:
        return
    ing = ingresses["merc-gateway-http"]
    assert component(ing) == "gateway"
    [gw] = [o for o in objects(docs, "Service") if component(o) == "gateway"]
    assert "http" in {p["name"] for p in gw["spec"]["ports"]}
    assert ing["spec"].get("ingressClassName", "") == page["className"]
    assert ing["spec"].get("tls", []) == page["tls"]
    assert [r["host"] for r in ing["spec"]["rules"]] == [h["host"] for h in page["hosts"]]
    for rule in ing["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"] == {"name": gw["metadata"]["name"], "port": {"name": "http"}}
    annotations = ing["metadata"].get("annotations", {})
    if "nginx.ingress.kubernetes.io/backend-protocol" in annotations:
        assert annotations["nginx.ingress.kubernetes.io/backend-protocol"] == ("HTTPS" if values["tls"]["enabled"] else "HTTP")
    if values["tls"]["mutual"]:
        assert annotations["nginx.ingress.kubernetes.io/proxy-ssl-secret"]


def gateway_page(docs) -> tuple[dict, dict, dict, dict]:
    """The gateway's Deployment container, its environment, its Service and its NetworkPolicy."""
    [gw] = [o for o in objects(docs, "Deployment") if component(o) == "gateway"]
    [c] = pod_spec(gw)["containers"]
    [svc] = [o for o in objects(docs, "Service") if component(o) == "gateway"]
    policies = [p for p in objects(docs, "NetworkPolicy") if component(p) == "gateway"]
    return c, container_env(docs, c), svc, (policies[0] if policies else {})


def check_page_port(docs, values: dict) -> None:
    port, tls = values["gateway"]["httpPort"], values["tls"]["enabled"]
    c, env, svc, policy = gateway_page(docs)
    # Always set: the services' default (28080) is on, so 0 must be said.
    assert env["MERC_HTTP_PORT"] == str(port)
    http = [p for p in c["ports"] if p["name"] == "http"]
    service_http = [p for p in svc["spec"]["ports"] if p["name"] == "http"]
    rules = [r for r in (policy.get("spec", {}).get("ingress") or []) if {p["port"] for p in r["ports"]} & {port}]
    # gRPC stays first: the probes and helm test use ports[0].
    assert c["ports"][0]["name"] == "grpc" and svc["spec"]["ports"][0]["name"] == "grpc"
    if not port:
        assert http == [] and service_http == [] and rules == []
        assert {p["containerPort"] for p in c["ports"]} == {values["gateway"]["port"], values["gateway"]["metricsPort"]}
        return
    assert http == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert service_http == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP",
                             "appProtocol": "https" if tls else "http"}]
    if values["networkPolicy"]["enabled"]:
        # From exactly the clients allowed on gRPC (networkPolicy.gateway.from), not the test Pod.
        assert rules == [allow(port, values["networkPolicy"]["gateway"]["from"])]


@pytest.mark.parametrize("name", VALUES)
def test_the_gateway_serves_the_timeline_page_on_http_port(name):
    check_page_port(render(name), effective_values(name))


@pytest.mark.parametrize("sets", [("gateway.httpPort=0",), ("gateway.httpPort=0", "tls.enabled=true", "tls.existingSecret=t"),
                                  ("gateway.httpPort=8080", "tls.enabled=true", "tls.existingSecret=t"),
                                  ("gateway.httpPort=8080",)],
                         ids=["off", "off-tls", "8080-tls", "8080"])
def test_the_page_port_follows_gateway_http_port(sets):
    docs = tuple(d for d in yaml.safe_load_all(helm_template(sets=sets).stdout) if d)
    values = effective_values("default")
    for s in sets:
        key, value = s.split("=", 1)
        section, field = key.rsplit(".", 1)
        target = values
        for part in section.split("."):
            target = target[part]
        target[field] = int(value) if value.isdigit() else (value == "true" if value in ("true", "false") else value)
    check_page_port(docs, values)
    ingress = {component(p): p["spec"]["ingress"] for p in objects(docs, "NetworkPolicy")}
    assert ingress == expected_ingress(values)


@pytest.mark.parametrize("name", VALUES)
def test_every_component_has_a_pdb_unless_disabled(name):
    docs, values = render(name), effective_values(name)
    pdbs = {component(o): o for o in objects(docs, "PodDisruptionBudget")}
    for obj in objects(docs, "Deployment") + objects(docs, "StatefulSet"):
        comp = component(obj)
        section = values["encoders"][comp.split("-")[1]] if comp.startswith("encoder-") else values[comp]
        if section["podDisruptionBudget"]["enabled"]:
            assert pdbs[comp]["spec"]["selector"]["matchLabels"] == obj["spec"]["selector"]["matchLabels"]
        else:
            assert comp not in pdbs


def test_kafka_topics_are_the_local_stacks_topics():
    """KafkaTopics (Strimzi) = deploy/local/kafka.sh's list: equal partitions, state compacted, dlq 1."""
    docs, values = render("all-features"), effective_values("all-features")
    prefix, partitions = values["kafka"]["topicPrefix"], values["kafka"]["partitions"]
    rendered = {}
    for t in objects(docs, "KafkaTopic"):
        name = t["spec"]["topicName"]
        assert name.startswith(prefix + ".")
        cfg = "cleanup.policy=compact" if t["spec"]["config"].get("cleanup.policy") == "compact" else ""
        parts = "P" if t["spec"]["partitions"] == partitions else str(t["spec"]["partitions"])
        rendered[name[len(prefix) + 1:]] = (parts, cfg)
        assert t["metadata"]["labels"]["strimzi.io/cluster"] == objects(docs, "Kafka")[0]["metadata"]["name"]
    assert rendered == local_topics()


@pytest.mark.parametrize("name", VALUES)
def test_secrets_stay_out_of_configmaps(name):
    for cm in objects(render(name), "ConfigMap"):
        for key, value in cm["data"].items():
            assert key not in ("MERC_DATABASE_URL", "MERC_KAFKA_SASL_PASSWORD", "MERC_PSEUDONYM_SECRET", "MERC_EMBEDDING_KEYS", "MERC_API_KEY",
                               "MERC_API_KEYS"), key
            assert "change-me" not in value and "://" not in value, key


def test_existing_secrets_are_referenced_not_copied():
    docs = render("default")
    assert objects(docs, "Secret") == []
    [gw] = [o for o in objects(docs, "Deployment") if component(o) == "gateway"]
    ref = next(e for e in pod_spec(gw)["containers"][0]["env"] if e["name"] == "MERC_DATABASE_URL")
    assert ref["valueFrom"]["secretKeyRef"] == {"name": "merc-database", "key": "database-url"}


@pytest.mark.parametrize("name", VALUES)
def test_topology_spread_selects_its_own_pods(name):
    for obj in render(name):
        if obj["kind"] not in ("Deployment", "StatefulSet"):
            continue
        for constraint in pod_spec(obj).get("topologySpreadConstraints", []):
            assert constraint["labelSelector"]["matchLabels"] == obj["spec"]["selector"]["matchLabels"]


def test_chart_app_version_is_the_project_version():
    import tomllib

    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


# ---- security and privacy ---------------------------------------------------------------------------

SERVICES = ("encoder", "fusion", "gateway")  # what serves gRPC: checks API keys, serves TLS
FILE_SETTINGS = ("MERC_API_KEYS_FILE", "MERC_TLS_CERT_FILE", "MERC_TLS_KEY_FILE", "MERC_TLS_CA_FILE", "MERC_TLS_CLIENT_CA_FILE",
                 "MERC_TLS_CLIENT_CERT_FILE", "MERC_TLS_CLIENT_KEY_FILE", "MERC_KAFKA_SSL_CAFILE")


def kind_of(comp: str) -> str:
    return "encoder" if comp.startswith("encoder-") else comp


def merc_pods(name):
    """(component, pod spec, container, environment) of every workload running the MERC image."""
    docs = render(name)
    for obj in workloads(name):
        if component(obj) != "triton":
            spec = pod_spec(obj)
            [c] = spec["containers"]
            yield component(obj), spec, c, container_env(docs, c)


@pytest.mark.parametrize("name", VALUES)
def test_every_file_setting_names_a_file_mounted_read_only_from_a_secret(name):
    """A path in MERC_*_FILE that no volume provides would only fail when the pod starts."""
    values = effective_values(name)
    for comp, spec, c, env in merc_pods(name):
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for var in FILE_SETTINGS:
            if var not in env:
                continue
            path = PurePosixPath(env[var])
            [mount] = [m for m in c["volumeMounts"] if PurePosixPath(m["mountPath"]) == path.parent]
            assert mount.get("readOnly") is True, (comp, var)
            secret = volumes[mount["name"]]["secret"]
            if "items" in secret:
                assert path.name in {i["path"] for i in secret["items"]}, (comp, var)
            else:  # the whole kubernetes.io/tls Secret
                assert secret["secretName"] == values["tls"]["existingSecret"], (comp, var)
                assert path.name in {"tls.crt", "tls.key", values["tls"]["caKey"]}, (comp, var)


@pytest.mark.parametrize("name", VALUES)
def test_api_keys_are_checked_by_every_service_and_presented_by_helm_test(name):
    keys = effective_values(name)["apiKeys"]
    for comp, spec, c, env in merc_pods(name):
        checks = bool(keys["existingSecret"]) and kind_of(comp) in SERVICES
        assert ("MERC_API_KEYS_FILE" in env) == checks, comp
        if checks:
            assert env["MERC_API_KEYS_FILE"] == f"/etc/merc/api-keys/{keys['key']}"
            [volume] = [v for v in spec["volumes"] if v["name"] == "api-keys"]
            assert volume["secret"]["secretName"] == keys["existingSecret"]
        if comp == "test" and keys["existingSecret"]:
            ref = next(e for e in c["env"] if e["name"] == "MERC_API_KEY")["valueFrom"]["secretKeyRef"]
            assert ref == {"name": keys["testKey"]["existingSecret"], "key": keys["testKey"]["key"]}
            # The test's requests name MERC_TENANT: it must be the key's tenant.
            assert env["MERC_TENANT"] == (keys["testKey"]["tenant"] or effective_values(name)["config"]["tenant"])
        else:
            assert "MERC_API_KEY" not in env, comp


def test_api_keys_without_helm_test_need_no_test_key():
    docs = [d for d in yaml.safe_load_all(helm_template(sets=("apiKeys.existingSecret=merc-api-keys", "tests.enabled=false")).stdout) if d]
    assert objects(docs, "Pod") == []
    [gw] = [o for o in objects(docs, "Deployment") if component(o) == "gateway"]
    assert container_env(docs, pod_spec(gw)["containers"][0])["MERC_API_KEYS_FILE"] == "/etc/merc/api-keys/api-keys"


@pytest.mark.parametrize("name", VALUES)
def test_grpc_tls_reaches_every_service_and_helm_test(name):
    """Services serve with the certificate and trust the CA (the gateway calls the encoders, the probes
    call the service itself); helm test trusts the CA; with mutual TLS everyone presents the
    certificate as a client and the services require one."""
    tls = effective_values(name)["tls"]
    serving = {"MERC_TLS_CERT_FILE", "MERC_TLS_KEY_FILE", "MERC_TLS_CA_FILE"}
    client = {"MERC_TLS_CLIENT_CERT_FILE", "MERC_TLS_CLIENT_KEY_FILE"} if tls["mutual"] else set()
    for comp, _spec, _c, env in merc_pods(name):
        if not tls["enabled"] or kind_of(comp) in ("migration", "retention"):  # no gRPC there
            expected = set()
        elif comp == "test":
            expected = {"MERC_TLS_CA_FILE"} | client
        else:
            expected = serving | client | ({"MERC_TLS_CLIENT_CA_FILE"} if tls["mutual"] else set())
        assert {k for k in env if k.startswith("MERC_TLS_")} == expected, comp
        if expected:
            assert env["MERC_TLS_CA_FILE"] == f"/etc/merc/tls/{tls['caKey']}"
            if tls["mutual"] and comp != "test":
                assert env["MERC_TLS_CLIENT_CA_FILE"] == env["MERC_TLS_CA_FILE"]


@pytest.mark.parametrize("name", VALUES)
def test_only_the_encoders_get_the_pseudonym_secret_and_from_a_secret(name):
    docs, values = render(name), effective_values(name)
    secret = values["privacy"]["pseudonymSecret"]
    chart_secrets = {o["metadata"]["name"]: o for o in objects(docs, "Secret") if not is_hook(o)}
    for comp, _spec, c, _env in merc_pods(name):
        var = next((e for e in c.get("env") or [] if e["name"] == "MERC_PSEUDONYM_SECRET"), None)
        if kind_of(comp) != "encoder" or not (secret["existingSecret"] or secret["value"]):
            assert var is None, comp
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["key"] == secret["key"]
        if secret["existingSecret"]:
            assert ref["name"] == secret["existingSecret"] and ref["name"] not in chart_secrets
        else:  # inline: kept in the chart's own (non-hook) Secret
            assert chart_secrets[ref["name"]]["stringData"][ref["key"]] == secret["value"]


@pytest.mark.parametrize("name", VALUES)
def test_the_encoders_and_fusion_get_the_embedding_keys_from_a_secret_whenever_speakers_are_pseudonymised(name):
    docs, values = render(name), effective_values(name)
    keys, pseudonym = values["privacy"]["embeddingKeys"], values["privacy"]["pseudonymSecret"]
    sealed = bool(keys["existingSecret"] or keys["value"])
    assert sealed or not (pseudonym["existingSecret"] or pseudonym["value"])  # a tenant secret set: sealing on
    chart_secrets = {o["metadata"]["name"]: o for o in objects(docs, "Secret") if not is_hook(o)}
    got = set()
    for comp, _spec, c, _env in merc_pods(name):
        var = next((e for e in c.get("env") or [] if e["name"] == "MERC_EMBEDDING_KEYS"), None)
        if kind_of(comp) not in ("encoder", "fusion") or not sealed:
            assert var is None, comp
            continue
        got.add(kind_of(comp))
        ref = var["valueFrom"]["secretKeyRef"]
        assert ref["key"] == keys["key"]
        if keys["existingSecret"]:
            assert ref["name"] == keys["existingSecret"] and ref["name"] not in chart_secrets
        else:
            assert chart_secrets[ref["name"]]["stringData"][ref["key"]] == keys["value"]
    assert got == ({"encoder", "fusion"} if sealed else set())


@pytest.mark.parametrize("name", VALUES)
def test_retention_is_a_scheduled_merc_retention(name):
    docs, values = render(name), effective_values(name)
    retention = values["retention"]
    crons = objects(docs, "CronJob")
    if not retention["enabled"]:
        assert crons == []
        return
    [cron] = crons
    assert cron["spec"]["schedule"] == retention["schedule"]
    assert cron["spec"].get("timeZone", "") == retention["timeZone"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert not is_hook(cron)
    spec = pod_spec(cron)
    [c] = spec["containers"]
    assert c["args"] == ["retention"]
    env = container_env(docs, c)
    assert float(env["MERC_RETENTION_DAYS"]) == retention["days"] > 0
    assert {"MERC_DATABASE_URL", "MERC_KAFKA_BOOTSTRAP", "MERC_TOPIC_PREFIX"} <= set(env)
    # It runs long after the install: nothing it uses may be a hook (hooks are deleted on success).
    sa = spec["serviceAccountName"]
    if values["serviceAccount"]["create"]:
        [account] = [o for o in objects(docs, "ServiceAccount") if o["metadata"]["name"] == sa]
        assert not is_hook(account)
    chart_secrets = {o["metadata"]["name"]: o for o in objects(docs, "Secret")}
    for var in c["env"]:
        ref = var.get("valueFrom", {}).get("secretKeyRef")
        if ref and ref["name"] in chart_secrets:
            assert not is_hook(chart_secrets[ref["name"]]), ref["name"]


# ---- NetworkPolicies: only what must talk, talks -------------------------------------------------

def selects(policy: dict, labels: dict) -> bool:
    want = policy["spec"]["podSelector"].get("matchLabels", {})
    return all(labels.get(k) == v for k, v in want.items())


def egress_ports(policy: dict) -> set[int]:
    return {p["port"] for rule in policy["spec"].get("egress", []) for p in rule.get("ports", [])}


# component -> the ports it may reach (53: DNS; defaults: Kafka 9092, PostgreSQL 5432, Triton 8001)
EGRESS = {
    "encoder-text": {53, 9092, 8001},
    "encoder-audio": {53, 9092, 8001},
    "encoder-vision": {53, 9092, 8001},
    "gateway": {53, 9092, 5432, 28061, 28062, 28063},
    "fusion": {53, 9092, 5432, 8001},
    "triton": set(),
    "migration": {53, 5432},
    "test": {53, 28050},  # the gateway alone: the events come back on its stream
    "retention": {53, 9092, 5432},
}


def peer(comp: str) -> dict:
    return {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "merc", "app.kubernetes.io/instance": "merc",
                                            "app.kubernetes.io/component": comp}}}


def allow(port: int, peers: list | None) -> dict:
    """One ingress rule: this port, from these peers (None or []: from anyone)."""
    rule = {"ports": [{"port": port, "protocol": "TCP"}]}
    if peers:
        rule["from"] = peers
    return rule


def expected_ingress(values: dict) -> dict[str, list[dict]]:
    """component -> its exact ingress rules: the gRPC port only from its callers, the gateway's page
    (httpPort, unless 0) only from its clients (networkPolicy.gateway.from; not the test Pod), the
    metrics port only from networkPolicy.metrics.from, nothing else from anyone."""
    np = values["networkPolicy"]
    metrics_from = np["metrics"]["from"]
    encoders = [m for m in ENCODERS if values["encoders"][m]["enabled"]]
    gateway_from = np["gateway"]["from"] and [*np["gateway"]["from"], peer("test")]
    page = [allow(values["gateway"]["httpPort"], np["gateway"]["from"])] if values["gateway"]["httpPort"] else []
    rules = {
        "gateway": [allow(values["gateway"]["port"], gateway_from), *page, allow(values["gateway"]["metricsPort"], metrics_from)],
        "fusion": [allow(values["fusion"]["metricsPort"], metrics_from)],
        "migration": [],
        "test": [],
    }
    for m in encoders:
        enc = values["encoders"][m]
        rules[f"encoder-{m}"] = [allow(enc["port"], [peer("gateway")]), allow(enc["metricsPort"], metrics_from)]
    if values["triton"]["enabled"]:
        callers = [peer(f"encoder-{m}") for m in encoders] + [peer("fusion")]
        rules["triton"] = [allow(values["triton"]["ports"]["grpc"], callers),
                           allow(values["triton"]["ports"]["metrics"], metrics_from)]
    if values["retention"]["enabled"]:
        rules["retention"] = []
    return rules


@pytest.mark.parametrize("name", VALUES)
def test_network_policies(name):
    docs, values = render(name), effective_values(name)
    policies = objects(docs, "NetworkPolicy")
    kafka_ports = set(values["networkPolicy"]["kafka"]["ports"])
    disabled = {values["encoders"][m]["port"] for m in ENCODERS if not values["encoders"][m]["enabled"]}
    for obj in workloads(name):
        labels = pod_labels(obj)
        [policy] = [p for p in policies if selects(p, labels)]
        comp = component(obj)
        assert set(policy["spec"]["policyTypes"]) == {"Ingress", "Egress"}
        assert is_hook(policy) == is_hook(obj), f"{comp}: the policy must exist when its pod does"
        expected = {p for p in EGRESS[comp] if p != 9092 and p not in disabled}
        if 9092 in EGRESS[comp]:
            expected |= kafka_ports
        assert egress_ports(policy) == expected, comp
    ingress = {component(p): p["spec"]["ingress"] for p in policies}
    assert ingress == expected_ingress(values)


def test_metrics_ports_are_open_to_anyone_only_when_asked():
    """networkPolicy.metrics.from: [] = any source, on the metrics ports only."""
    docs = tuple(yaml.safe_load_all(helm_template(extra=("--set-json", "networkPolicy.metrics.from=[]")).stdout))
    values = effective_values("default")
    values["networkPolicy"]["metrics"]["from"] = []
    ingress = {component(p): p["spec"]["ingress"] for p in objects([d for d in docs if d], "NetworkPolicy")}
    assert ingress == expected_ingress(values)
    assert ingress["fusion"] == [{"ports": [{"port": 29090, "protocol": "TCP"}]}]


def test_network_policies_follow_the_configured_kafka_and_database():
    docs = render("secure-external")
    [fusion] = [p for p in objects(docs, "NetworkPolicy") if component(p) == "fusion"]
    rules = fusion["spec"]["egress"]
    assert {"ipBlock": {"cidr": "10.20.0.0/16"}} in next(r["to"] for r in rules if r["ports"][0]["port"] == 9093)
    assert {"ipBlock": {"cidr": "10.30.0.0/24"}} in next(r["to"] for r in rules if r["ports"][0]["port"] == 5432)
    # Triton outside the release: any address on the port of triton.externalUrl.
    assert any(r["ports"] == [{"port": 8001, "protocol": "TCP"}] and "to" not in r for r in rules)
