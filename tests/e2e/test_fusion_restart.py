"""kill -9 the fusion service mid-dialogue: after a restart no event is lost and none is duplicated."""

import subprocess
import threading
import time
from collections import Counter

import pytest

from e2e.conftest import SERVICES, dialogue, new_conversation, services
from e2e.test_text_pipeline import send

pytestmark = pytest.mark.e2e


def test_kill_fusion_mid_dialogue(gateway, reader, running):
    conv = new_conversation()
    lines = dialogue(min_len=12)

    def sender():
        # Keep utterances flowing while the fusion service dies and comes back.
        for seq, u in enumerate(lines):
            send(gateway, conv, seq, u)
            time.sleep(0.15)

    t = threading.Thread(target=sender)
    t.start()
    first = reader.collect(conv, 3, timeout_s=60)
    assert first, "no event before the crash"
    subprocess.run([SERVICES, "kill", "fusion"], check=True, timeout=30)
    killed_after = len(first)
    time.sleep(0.5)
    services("start", "fusion")
    t.join()

    events = first + reader.collect(conv, len(lines) - len(first), timeout_s=120)
    counts = Counter((e.utterance.sequence, e.revision) for e in events)
    duplicated = [k for k, n in counts.items() if n > 1]
    missing = sorted(set(range(len(lines))) - {s for s, _ in counts})
    print(f"expected {len(lines)}, received {len(events)}, duplicated {len(duplicated)}, killed after {killed_after} events")
    assert not duplicated, f"duplicated events: {duplicated}"
    assert not missing, f"lost events: {missing}"
    assert [e.utterance.sequence for e in events] == list(range(len(lines)))
