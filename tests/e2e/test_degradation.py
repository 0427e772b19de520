"""The camera goes away mid-dialogue: stop the vision encoder service, then bring it back.

Every utterance must still get an event within the join window plus a margin, marked degraded and
without vision while the encoder is down; complete three-modality events resume once it is back
(the time from its restart to the first complete event is recorded).

Nothing here rests on timing luck: the test starts once a first three-modality event has come
through (every encoder warm), and where it expects an utterance complete it waits for that
utterance's complete revision (a busy machine may make the face miss the window, and the join then
revises the event when it lands): what is asserted is the outcome, not the speed.
The measured delays (send -> event) are written to .run/reports/degradation.json for the record.
"""

import json
import os
import time

import pytest
from conftest import REPO
from samples import face_png, voice_wav

from e2e.conftest import new_conversation, services
from e2e.test_multimodal_pipeline import A, T, V, request
from merc.v1 import events_pb2

pytestmark = pytest.mark.e2e

# Generous on purpose: the deadline is the join's, the margin absorbs a loaded 2-core CI machine.
MARGIN_S = 4.0
RECOVERY_S = 15.0


def send_and_wait(gateway, reader, conv, seq, voice, face, complete: bool = False):
    """The utterance's first event and its delay; with ``complete``, its first event with all three
    modalities (a revision counts) if one comes within 30 s, else the latest."""
    started = time.monotonic()
    gateway.AnalyzeUtterance(request(conv, seq, text="Well, that went great.", audio=voice, faces=[face]), timeout=30)
    first = latest = None
    while time.monotonic() - started < 30:
        for m in reader.consumer.poll(timeout_ms=100):
            if m.value is None:
                continue
            e = events_pb2.EmotionEvent.FromString(m.value)
            if e.utterance.conversation_id == conv and e.utterance.sequence == seq:
                first = first or (e, time.monotonic() - started)
                latest = e
        if first and (not complete or V in latest.modalities):
            return (latest if complete else first[0]), first[1]
    if first:
        return latest, first[1]
    pytest.fail(f"no event for utterance {seq} within 30 s")


def warm(gateway, reader, voice, face, timeout_s: float = 90.0) -> None:
    """Until one utterance comes through with all three modalities: every encoder up, warm and fast enough."""
    conv, deadline = new_conversation(), time.monotonic() + timeout_s
    for seq in range(1000):
        e, _ = send_and_wait(gateway, reader, conv, seq, voice, face)
        if list(e.modalities) == [T, A, V] or time.monotonic() > deadline:
            assert list(e.modalities) == [T, A, V], f"no complete event within {timeout_s} s: {e}"
            return


def test_stopping_the_vision_encoder_degrades_and_restarting_restores(running, gateway, reader):
    conv, voice, face = new_conversation(), voice_wav(), face_png()
    window_s = running.join_window_ms / 1000
    phases = {"before": [], "down": [], "after": []}
    seq, recovery_s = 0, None
    warm(gateway, reader, voice, face)
    try:
        for _ in range(3):
            phases["before"].append(send_and_wait(gateway, reader, conv, seq, voice, face, complete=True))
            seq += 1
        services("stop", "encoder-vision")
        for _ in range(3):
            phases["down"].append(send_and_wait(gateway, reader, conv, seq, voice, face))
            seq += 1
        services("start", "encoder-vision")  # returns once it is SERVING (warm)
        back = time.monotonic()
        # The gateway notices within its reconnect backoff (at most 1 s): utterances sent meanwhile
        # are still degraded. Then every event is complete again.
        while recovery_s is None and time.monotonic() - back < RECOVERY_S:
            e, d = send_and_wait(gateway, reader, conv, seq, voice, face)
            seq += 1
            if V in e.modalities:
                recovery_s = time.monotonic() - back
            phases["after"].append((e, d))
        for _ in range(2):
            phases["after"].append(send_and_wait(gateway, reader, conv, seq, voice, face, complete=True))
            seq += 1
    finally:
        services("start", "encoder-vision")  # whatever happened, leave the stack whole

    report = {phase: [{"sequence": e.utterance.sequence, "delay_s": round(d, 3), "degraded": e.degraded,
                       "modalities": [int(m) for m in e.modalities], "weights": [round(w, 3) for w in e.modality_weights]}
                      for e, d in rows] for phase, rows in phases.items()}
    out = REPO / os.environ.get("MERC_RUN_DIR", ".run") / "reports"
    out.mkdir(parents=True, exist_ok=True)
    (out / "degradation.json").write_text(json.dumps({"join_window_s": window_s, "recovery_s": recovery_s, **report}, indent=2))
    assert recovery_s is not None, f"no complete event within {RECOVERY_S} s of the vision encoder's restart: {report}"

    for e, delay in phases["down"]:
        assert list(e.modalities) == [T, A] and e.degraded and V in e.missing_modalities, report
        assert delay <= window_s + MARGIN_S, f"degraded event after {delay:.2f} s (join window {window_s} s)"
    for e, _ in phases["before"] + phases["after"][-2:]:
        assert list(e.modalities) == [T, A, V] and not e.degraded, report
    # Without the face, text and voice carry the decision: each weighs more than it did with it.
    complete, degraded = phases["after"][-1][0], phases["down"][-1][0]
    assert degraded.modality_weights[0] > complete.modality_weights[0]
    assert degraded.modality_weights[1] > complete.modality_weights[1]
    assert complete.modality_weights[2] > 0
