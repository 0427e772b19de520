"""Faults while dialogues flow (real Kafka, PostgreSQL, Triton and services): nothing lost, nothing
duplicated. Each test keeps several conversations flowing through the gateway with a client that
retries what the platform asks it to retry (tests/retry_client.py), breaks one component, brings it back,
and counts what an independent read_committed consumer saw. Each writes its row of
.run/reports/faults.json: fault, expected, received, duplicated, recovery seconds (from the repair
until every conversation has produced a new event).

    pytest -m faults tests/e2e        (part of `make test`)
"""

import json
import os
import subprocess
import threading
import time
from collections import Counter

import grpc
import pytest
from conftest import REPO
from retry_client import RETRYABLE, analyze_until_accepted

from e2e.conftest import SERVICES, dialogue, new_conversation, services
from merc.v1 import common_pb2, events_pb2, gateway_pb2

pytestmark = [pytest.mark.e2e, pytest.mark.faults]

STACK = str(REPO / "deploy/local/stack.sh")
CONVERSATIONS, PER_CONVERSATION, GAP_S = 3, 10, 0.2


def stack(*args: str) -> None:
    subprocess.run([STACK, *args], check=True, timeout=300)


class Flow:
    """Conversations sent utterance by utterance, each retried until the gateway accepts it."""

    def __init__(self, gateway) -> None:
        self.gateway = gateway
        self.lines = dialogue(min_len=PER_CONVERSATION)[:PER_CONVERSATION]
        self.conversations = [new_conversation() for _ in range(CONVERSATIONS)]
        self.retries = 0
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _send(self, conv: str, seq: int) -> None:
        u = self.lines[seq]
        ref = common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker=u["speaker"])
        request = gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=u["text"])
        analyze_until_accepted(self.gateway, request, call_timeout_s=15, give_up_s=240, on_retry=self._retried)

    def _retried(self) -> None:
        self.retries += 1

    def _run(self) -> None:
        for seq in range(PER_CONVERSATION):
            for conv in self.conversations:
                self._send(conv, seq)
            time.sleep(GAP_S)

    def start(self) -> None:
        self.thread.start()

    def join(self) -> None:
        self.thread.join(timeout=600)
        assert not self.thread.is_alive(), "the sender never finished"


def collect(reader, flow: Flow, timeout_s: float = 240) -> tuple[list, dict]:
    """Every event of the flow's conversations until each utterance has one (or the timeout),
    then a quiet second to catch duplicates; and when the last first-event arrived."""
    want = {(c, s) for c in flow.conversations for s in range(PER_CONVERSATION)}
    events, first_seen = [], {}
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not want <= set(first_seen):
        for m in reader.consumer.poll(timeout_ms=300):
            if m.value is None:
                continue
            e = events_pb2.EmotionEvent.FromString(m.value)
            key = (e.utterance.conversation_id, e.utterance.sequence)
            if key in want:
                events.append(e)
                first_seen.setdefault(key, time.monotonic())
    end = time.monotonic() + 2
    while time.monotonic() < end:
        for m in reader.consumer.poll(timeout_ms=300):
            if m.value is not None:
                e = events_pb2.EmotionEvent.FromString(m.value)
                if (e.utterance.conversation_id, e.utterance.sequence) in want:
                    events.append(e)
    return events, first_seen


def report(fault: str, flow: Flow, events: list, first_seen: dict, restored_at: float) -> dict:
    counts = Counter((e.utterance.conversation_id, e.utterance.sequence, e.revision) for e in events)
    expected = CONVERSATIONS * PER_CONVERSATION
    received = len({(c, s) for c, s, _ in counts})
    # Recovery: until every conversation has a new event again (the slowest partition decides).
    per_conv = [min((t for (c, _), t in first_seen.items() if c == conv and t >= restored_at), default=None) for conv in flow.conversations]
    after = [t for t in per_conv if t is not None]
    row = {"fault": fault, "expected": expected, "received": received,
           "duplicated": sum(n - 1 for n in counts.values() if n > 1), "revisions": sum(1 for _, _, r in counts if r > 0),
           "client_retries": flow.retries, "recovery_s": round(max(after) - restored_at, 2) if after else None}
    out = REPO / os.environ.get("MERC_RUN_DIR", ".run") / "reports" / "faults.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text()) if out.is_file() else {}
    rows[fault] = row
    out.write_text(json.dumps(rows, indent=2))
    print(row)
    assert row["received"] == expected, row
    assert row["duplicated"] == 0, row
    # Per conversation, first events in utterance order (the join keeps it).
    for conv in flow.conversations:
        firsts = [e.utterance.sequence for e in events if e.utterance.conversation_id == conv and e.revision == 0]
        assert firsts == sorted(firsts), (conv, firsts)
    return row


def run_fault(gateway, reader, fault: str, breaks, repairs, down_s: float) -> dict:
    flow = Flow(gateway)
    flow.start()
    time.sleep(2 * GAP_S * 3)  # a few utterances through before the fault
    breaks()
    time.sleep(down_s)
    repairs()
    restored_at = time.monotonic()
    flow.join()
    events, first_seen = collect(reader, flow)
    return report(fault, flow, events, first_seen, restored_at)


def test_kafka_broker_restart(running, gateway, reader):
    run_fault(gateway, reader, "Kafka broker stop + restart", lambda: stack("down", "kafka"), lambda: stack("up", "kafka"), 5)


def test_postgresql_restart(running, gateway, reader):
    run_fault(gateway, reader, "PostgreSQL stop + restart", lambda: stack("down", "postgres"), lambda: stack("up", "postgres"), 5)


def test_triton_down_for_20_seconds(running, gateway, reader):
    run_fault(gateway, reader, "Triton stopped 20 s", lambda: stack("down", "triton"), lambda: stack("up", "triton"), 20)


def test_fusion_kill_9_and_restart(running, gateway, reader):
    kill = lambda: subprocess.run([SERVICES, "kill", "fusion"], check=True, timeout=30)
    run_fault(gateway, reader, "fusion kill -9 + restart", kill, lambda: services("start", "fusion"), 1)


def test_encoder_crash_mid_request(running, gateway, reader):
    kill = lambda: subprocess.run([SERVICES, "kill", "encoder-text"], check=True, timeout=30)
    run_fault(gateway, reader, "text encoder kill -9 mid-request + restart", kill, lambda: services("start", "encoder-text"), 1)


def test_a_second_fusion_instance_takes_over(running, gateway, reader):
    """Two fusion instances share the partitions; kill -9 one and do not restart it: the other
    takes its partitions over (after the dead member's session times out) and loses nothing."""
    env = {**os.environ, "MERC_FUSION_INSTANCE": "local-second", "MERC_FUSION_PORT": "28071", "MERC_FUSION_METRICS_PORT": "0"}
    log = open(REPO / os.environ.get("MERC_RUN_DIR", ".run") / "logs" / "fusion-second.log", "ab")
    second = subprocess.Popen([str(REPO / ".venv/bin/python"), "-m", "merc.fusion"], env=env, stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 60
        from merc.runtime.healthcheck import check

        while not check("127.0.0.1:28071") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert check("127.0.0.1:28071"), "the second fusion instance never became SERVING"
        kill = lambda: subprocess.run([SERVICES, "kill", "fusion"], check=True, timeout=30)
        run_fault(gateway, reader, "fusion kill -9, second instance takes over", kill, lambda: None, 0)
    finally:
        second.kill()
        second.wait(timeout=30)
        log.close()
        services("start", "fusion")


def test_poison_message_goes_to_the_dlq_and_the_partition_keeps_flowing(running, gateway, reader):
    from e2e.test_text_pipeline import send
    from merc.bus.base import ConsumerSpec
    from merc.bus.kafka import KafkaBus
    from merc.bus.topics import conversation_key

    conv = new_conversation()
    dlq = KafkaBus(running).consumer(ConsumerSpec([running.topic("dlq")], group_id=None, from_beginning=False))
    dlq.poll(timeout_ms=200)
    send(gateway, conv, 0, {"speaker": "A", "text": "Before the poison."})
    producer = KafkaBus(running).producer()
    # Same key as the conversation: the same partition as its embeddings.
    key = conversation_key(running.tenant, conv)
    producer.send(running.topic("embeddings.text"), key, b"\x08\xff\xff not a protobuf", (("schema", b"merc.v1.ModalityEmbedding"),))
    producer.flush()
    producer.close()
    send(gateway, conv, 1, {"speaker": "B", "text": "After the poison."})
    assert sorted(e.utterance.sequence for e in reader.collect(conv, 2)) == [0, 1]
    dead, deadline = [], time.monotonic() + 30
    while not dead and time.monotonic() < deadline:
        dead = [m for m in dlq.poll(timeout_ms=500) if m.key == key]
    dlq.close()
    assert dead and dead[0].value.startswith(b"\x08\xff\xff")
    assert dead[0].header("reason") and dead[0].header("source") == running.topic("embeddings.text").encode()


def test_a_broker_outage_longer_than_the_delivery_timeout_is_never_acknowledged(running, gateway, reader):
    """Kafka down for longer than the delivery timeout: a record sent meanwhile fails (DeliveryFailed, raised
    by the producer's own expiry, not by a shorter wait of ours) and the gateway answers UNAVAILABLE, never
    OK; once the broker is back, the same producer delivers and the client's retry gets its event, once."""
    from e2e.test_text_pipeline import send
    from merc.bus import DeliveryFailed
    from merc.bus.kafka import KafkaBus
    from merc.bus.topics import conversation_key

    conv = new_conversation()
    # A tombstone for a conversation nobody has, with an erasure's headers (merc.runtime.privacy): a consumer
    # of merc.emotions erases nothing with it, and meets nothing that MERC itself would not publish.
    topic, key = running.topic("emotions"), conversation_key(running.tenant, conv)
    erasure = (("tenant", running.tenant.encode()), ("erased", b"1"))
    producer = KafkaBus(running.model_copy(update={"kafka_delivery_timeout_s": 3.0})).producer()
    producer.send(topic, key, None, erasure).wait()  # connected, the topic's metadata known
    line = dialogue()[0]
    stack("down", "kafka")
    try:
        with pytest.raises(DeliveryFailed):
            producer.send(topic, key, None, erasure).wait(timeout_s=120)
        # The encoders' own timeout (MERC_KAFKA_DELIVERY_TIMEOUT_S) ends the call well within this one's.
        with pytest.raises(grpc.RpcError) as e:
            send(gateway, conv, 0, line)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and "not published" in e.value.details(), (e.value.code(), e.value.details())
    finally:
        stack("up", "kafka")
    deadline = time.monotonic() + 120
    while True:  # the producer reconnects by itself
        try:
            producer.send(topic, key, None, erasure).wait()
            break
        except DeliveryFailed:
            assert time.monotonic() < deadline, "the producer never delivered again after the broker came back"
    producer.close()
    while True:  # the client retries what it was told to retry
        try:
            send(gateway, conv, 0, line)
            break
        except grpc.RpcError as err:
            assert err.code() in RETRYABLE and time.monotonic() < deadline, (err.code(), err.details())
            time.sleep(1)
    assert [e.utterance.sequence for e in reader.collect(conv, 1)] == [0]
