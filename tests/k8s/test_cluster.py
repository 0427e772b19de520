"""The chart on a real cluster (deploy/cluster/test.sh starts it): install, every pod Ready, `helm test`,
one encoder scaled with both replicas serving, `helm upgrade` and a fusion pod deleted while
conversations flow (0 lost, 0 duplicated, read_committed), `helm uninstall` leaving nothing.

The tests run in file order and share one release; each writes its row of .run/reports/k8s.json.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
import urllib.request
from collections import Counter

import grpc
import pytest
from conftest import REPO
from e2e.conftest import EventReader, dialogue, new_conversation
from retry_client import analyze_until_accepted

from merc.runtime.config import Settings
from merc.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc

RELEASE, NAMESPACE = "merc", "merc"
CHART = REPO / "deploy/helm/merc"
VALUES = REPO / "deploy/cluster/values.yaml"
REPORT = REPO / ".run/reports/k8s.json"
COMPONENTS = {"gateway", "fusion", "encoder-text", "encoder-audio", "encoder-vision", "triton"}


def record(name: str, row) -> None:
    rows = json.loads(REPORT.read_text()) if REPORT.is_file() else {}
    rows[name] = row
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(rows, indent=2))
    print(name, row)


def sh(*args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def kubectl(*args: str, **kw) -> subprocess.CompletedProcess:
    return sh("kubectl", "-n", NAMESPACE, *args, **kw)


def kube_json(*args: str) -> dict:
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def helm_values() -> list[str]:
    """The cluster's values file, plus where Kafka and PostgreSQL are (this node's address)."""
    cfg = Settings()
    return ["-f", str(VALUES), "--set", f"kafka.bootstrap={cfg.kafka_bootstrap}",
            "--set", f"database.url={cfg.database_url}"]


def pods_by_component() -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for p in kube_json("pods", "-l", f"app.kubernetes.io/instance={RELEASE}")["items"]:
        if p["metadata"].get("deletionTimestamp"):
            continue
        out.setdefault(p["metadata"]["labels"].get("app.kubernetes.io/component", "?"), []).append(p)
    return out


def ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions", []))


def gateway_address() -> str:
    svc = kube_json("service", f"{RELEASE}-gateway")
    return f"{svc['spec']['clusterIP']}:{svc['spec']['ports'][0]['port']}"


@pytest.fixture(scope="module")
def cfg() -> Settings:
    return Settings()


@pytest.fixture(scope="module")
def gateway():
    channel = grpc.insecure_channel(gateway_address())
    yield gateway_pb2_grpc.GatewayServiceStub(channel)
    channel.close()


@pytest.fixture
def reader(cfg):
    r = EventReader(cfg)
    yield r
    r.close()


class Flow:
    """Conversations sent utterance by utterance until stopped, each utterance retried while the
    platform answers UNAVAILABLE (a pod on its way out or in)."""

    def __init__(self, gateway, conversations: int = 3, gap_s: float = 0.3) -> None:
        self.gateway, self.gap_s = gateway, gap_s
        self.lines = dialogue(min_len=200)
        self.conversations = [new_conversation() for _ in range(conversations)]
        self.sent: list[tuple[str, int]] = []
        self.retries = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, conv: str, seq: int) -> None:
        u = self.lines[seq % len(self.lines)]
        ref = common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker=u["speaker"])
        request = gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=u["text"])
        analyze_until_accepted(self.gateway, request, call_timeout_s=20, give_up_s=300, on_retry=self._retried)
        self.sent.append((conv, seq))

    def _retried(self) -> None:
        self.retries += 1

    def _run(self) -> None:
        try:
            seq = 0
            while not self.stopping.is_set():
                for conv in self.conversations:
                    self._send(conv, seq)
                seq += 1
                time.sleep(self.gap_s)
        except BaseException as e:  # reported by stop()
            self.error = e

    def start(self) -> Flow:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=600)
        assert not self.thread.is_alive(), "the sender never finished"
        if self.error is not None:
            raise self.error


def tally(reader: EventReader, flow: Flow, timeout_s: float = 300) -> dict:
    """What a read_committed consumer saw for the flow's utterances: each must have an event, none twice."""
    want = set(flow.sent)
    events: list[events_pb2.EmotionEvent] = []
    seen: set = set()
    deadline = time.monotonic() + timeout_s
    linger_until = None
    while time.monotonic() < (linger_until or deadline):
        for m in reader.consumer.poll(timeout_ms=300):
            if m.value is None:
                continue
            e = events_pb2.EmotionEvent.FromString(m.value)
            key = (e.utterance.conversation_id, e.utterance.sequence)
            if key in want:
                events.append(e)
                seen.add(key)
        if linger_until is None and want <= seen:
            linger_until = time.monotonic() + 3  # a duplicate would come right behind
    counts = Counter((e.utterance.conversation_id, e.utterance.sequence, e.revision) for e in events)
    return {"sent": len(want), "lost": len(want - seen), "duplicated": sum(n - 1 for n in counts.values() if n > 1),
            "client_retries": flow.retries}


def wait_all_ready(timeout_s: float = 900) -> dict[str, list[dict]]:
    deadline = time.monotonic() + timeout_s
    while True:
        pods = pods_by_component()
        if COMPONENTS <= set(pods) and all(ready(p) for c in COMPONENTS for p in pods[c]):
            return pods
        if time.monotonic() > deadline:
            raise AssertionError({c: [(p["metadata"]["name"], p["status"].get("phase")) for p in ps] for c, ps in pods.items()})
        time.sleep(3)


def test_install_every_pod_ready():
    start = time.monotonic()
    sh("helm", "install", RELEASE, str(CHART), "-n", NAMESPACE, "--create-namespace", *helm_values(),
       "--wait", "--timeout", "20m", timeout=1500)
    pods = wait_all_ready()
    # The migration ran as the pre-install hook (install fails unless its Job succeeded): the schema's
    # revision is in the database.
    from sqlalchemy import create_engine, text

    engine = create_engine(Settings().database_url)
    with engine.connect() as db:
        revision = db.execute(text("SELECT version_num FROM alembic_version")).scalar_one()
    engine.dispose()
    record("install", {"seconds": round(time.monotonic() - start, 1),
                       "pods_ready": {c: [p["metadata"]["name"] for p in pods[c]] for c in sorted(COMPONENTS)},
                       "migration_revision": revision})


def test_helm_test_sends_an_utterance_and_gets_its_event():
    proc = sh("helm", "test", RELEASE, "-n", NAMESPACE, "--timeout", "10m", timeout=900, check=False)
    # A passing test pod is deleted (its hook policy); a failing one stays with its logs.
    logs = "" if proc.returncode == 0 else kubectl("logs", f"{RELEASE}-test", check=False).stdout
    record("helm_test", {"passed": proc.returncode == 0, "phase": re.findall(r"Phase:\s+(\S+)", proc.stdout)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:] + logs[-3000:]


def encoder_calls(pod: dict) -> float:
    """Encode calls this encoder pod handled (its own /metrics, read at the pod's address)."""
    port = next(p["containerPort"] for c in pod["spec"]["containers"] for p in c.get("ports", []) if p["name"] == "metrics")
    with urllib.request.urlopen(f"http://{pod['status']['podIP']}:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(float(v) for v in re.findall(r'^merc_grpc_server_handled_total\{[^}]*method="[^"]*Encode[^"]*"[^}]*\} (\S+)$', text, re.M))


def test_one_encoder_scales_alone_and_both_replicas_serve(gateway):
    before = {c: len(ps) for c, ps in pods_by_component().items()}
    kubectl("scale", f"deployment/{RELEASE}-encoder-text", "--replicas=2")
    kubectl("rollout", "status", f"deployment/{RELEASE}-encoder-text", "--timeout=600s", timeout=660)
    pods = wait_all_ready()
    text = pods["encoder-text"]
    assert len(text) == 2
    others = {c: len(ps) for c, ps in pods.items() if c in COMPONENTS and c != "encoder-text"}
    assert others == {c: before[c] for c in others}, "only the text encoder changed"
    start = {p["metadata"]["name"]: encoder_calls(p) for p in text}
    conv, seq = new_conversation(), 0
    deadline = time.monotonic() + 180  # the gateway finds the new replica when its connections age out (30 s)
    while time.monotonic() < deadline:
        gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(
            utterance=common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker="A"), text="Shall we begin?"), timeout=30)
        seq += 1
        served = {p["metadata"]["name"]: encoder_calls(p) - start[p["metadata"]["name"]] for p in text}
        if all(n > 0 for n in served.values()):
            break
        time.sleep(0.5)
    assert all(n > 0 for n in served.values()), served
    found_after = seq
    # Once found, the gateway alternates between them.
    mark = {p["metadata"]["name"]: encoder_calls(p) for p in text}
    for _ in range(20):
        gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(
            utterance=common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker="A"), text="And then?"), timeout=30)
        seq += 1
    split = {p["metadata"]["name"]: encoder_calls(p) - mark[p["metadata"]["name"]] for p in text}
    record("scale", {"encoder_text_replicas": len(text), "utterances_until_both_served": found_after,
                     "next_20_utterances_per_replica": split})
    assert all(n > 0 for n in split.values()), split


def test_upgrade_while_conversations_flow_loses_and_duplicates_nothing(gateway, reader):
    before = {p["metadata"]["uid"] for ps in pods_by_component().values() for p in ps}
    flow = Flow(gateway).start()
    time.sleep(5)
    start = time.monotonic()
    # A changed setting rolls every MERC pod (the ConfigMap's checksum is in their templates).
    sh("helm", "upgrade", RELEASE, str(CHART), "-n", NAMESPACE, *helm_values(), "--set", "config.joinWindowMs=1400",
       "--wait", "--timeout", "20m", timeout=1500)
    upgraded_s = round(time.monotonic() - start, 1)
    after = wait_all_ready()
    time.sleep(5)
    flow.stop()
    row = {**tally(reader, flow), "upgrade_seconds": upgraded_s,
           "pods_replaced": {c: all(p["metadata"]["uid"] not in before for p in after[c]) for c in sorted(COMPONENTS)}}
    record("upgrade", row)
    # Every MERC pod reads the ConfigMap that changed; Triton does not and stays.
    assert all(row["pods_replaced"][c] for c in COMPONENTS - {"triton"}), row
    assert row["lost"] == 0 and row["duplicated"] == 0, row


def test_fusion_pod_deleted_while_conversations_flow_loses_and_duplicates_nothing(gateway, reader):
    [old] = pods_by_component()["fusion"]
    flow = Flow(gateway).start()
    time.sleep(5)
    kubectl("delete", "pod", f"{RELEASE}-fusion-0", "--wait=false")
    time.sleep(2)
    [new] = wait_all_ready()["fusion"]
    time.sleep(5)
    flow.stop()
    row = {**tally(reader, flow), "fusion_pod_replaced": new["metadata"]["uid"] != old["metadata"]["uid"]}
    assert row["fusion_pod_replaced"], row
    record("fusion_pod_deleted", row)
    assert row["lost"] == 0 and row["duplicated"] == 0, row


def test_uninstall_leaves_no_merc_object():
    sh("helm", "uninstall", RELEASE, "-n", NAMESPACE, "--wait", "--timeout", "5m", timeout=400)
    kinds = "all,configmaps,secrets,serviceaccounts,networkpolicies,poddisruptionbudgets,horizontalpodautoscalers,jobs,pods,endpointslices"
    deadline = time.monotonic() + 120
    while True:
        left = kubectl("get", kinds, "-l", f"app.kubernetes.io/instance={RELEASE}", "-o", "name").stdout.split()
        if not left or time.monotonic() > deadline:
            break
        time.sleep(2)
    record("uninstall", {"left_behind": left})
    assert left == [], left
