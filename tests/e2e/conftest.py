from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path

import grpc
import pytest
from conftest import REPO

from merc.bus.base import ConsumerSpec
from merc.bus.kafka import KafkaBus
from merc.v1 import events_pb2, gateway_pb2_grpc

SERVICES = str(REPO / "deploy/local/services.sh")


def services(*args: str) -> None:
    subprocess.run([SERVICES, *args], check=True, timeout=120)


@pytest.fixture(scope="session")
def running(stack):
    """The text encoder, fusion and gateway as local processes (deploy/local/services.sh)."""
    services("start", "all")
    yield stack
    services("stop", "all")


@pytest.fixture
def gateway(running):
    channel = grpc.insecure_channel(f"127.0.0.1:{running.gateway_port}")
    yield gateway_pb2_grpc.GatewayServiceStub(channel)
    channel.close()


class EventReader:
    """An independent read_committed consumer of merc.emotions, opened before anything is sent."""

    def __init__(self, cfg) -> None:
        self.consumer = KafkaBus(cfg).consumer(ConsumerSpec([cfg.topic("emotions")], group_id=None, from_beginning=False))
        self.consumer.poll(timeout_ms=200)

    def collect(self, conversation_id: str, want: int, timeout_s: float = 90.0) -> list[events_pb2.EmotionEvent]:
        out: list[events_pb2.EmotionEvent] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for m in self.consumer.poll(timeout_ms=300):
                if m.value is None:  # an erasure tombstone
                    continue
                e = events_pb2.EmotionEvent.FromString(m.value)
                if e.utterance.conversation_id == conversation_id:
                    out.append(e)
            if len(out) >= want:
                # Linger briefly: a duplicate would show up right behind.
                for m in self.consumer.poll(timeout_ms=1500):
                    if m.value is None:
                        continue
                    e = events_pb2.EmotionEvent.FromString(m.value)
                    if e.utterance.conversation_id == conversation_id:
                        out.append(e)
                break
        return out

    def close(self) -> None:
        self.consumer.close()


@pytest.fixture
def reader(running):
    r = EventReader(running)
    yield r
    r.close()


def dialogue(min_len: int = 8) -> list[dict]:
    """A MELD dev dialogue when the data is here, else the bundled example, repeated to ``min_len`` lines."""
    from merc.data.meld import DataUnavailable, load_split

    try:
        for d in load_split("dev"):
            if len(d.utterances) >= min_len:
                return [{"speaker": u.speaker, "text": u.text} for u in d.utterances]
    except DataUnavailable:
        pass
    lines = (REPO / "examples/conversation.jsonl").read_text().splitlines()
    example = [{"speaker": json.loads(x)["speaker"], "text": json.loads(x)["text"]} for x in lines]
    # A checkout without the corpora beside it still gets as many lines as the test asked for.
    return example * -(-min_len // len(example))


def new_conversation() -> str:
    return f"e2e-{uuid.uuid4().hex[:12]}"


__all__ = ["EventReader", "Path", "dialogue", "new_conversation", "services"]
