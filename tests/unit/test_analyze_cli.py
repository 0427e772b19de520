"""`merc analyze` in embedded mode, with the real committed models."""

import json
import re

import grpc
import pytest

from merc.analyze import embedded, remote
from merc.bus import topics
from merc.bus.base import ConsumerSpec
from merc.bus.memory import MemoryBus
from merc.cli import main
from merc.pipeline.labels import LABELS
from merc.runtime.config import Settings
from merc.v1 import events_pb2, gateway_pb2
from unit.fakes import TinyInference


@pytest.fixture(scope="module")
def analysed(tmp_path_factory):
    d = tmp_path_factory.mktemp("m")
    (d / "broken.wav").write_bytes(b"not audio")
    lines = [
        json.dumps({"conversation": "c", "utterance": 0, "speaker": "A", "text": "I can't believe you did this to me!"}),
        "{oops",
        json.dumps({"conversation": "c", "utterance": 1, "speaker": "B", "text": "Great, thanks a lot.", "audio": "missing.flac"}),
        json.dumps({"conversation": "c", "utterance": 2, "speaker": "A", "audio": "broken.wav"}),
        json.dumps({"conversation": "c", "utterance": 3, "speaker": "B", "text": "Okay."}),
    ]
    (d / "m.jsonl").write_text("\n".join(lines) + "\n")
    code = main(["analyze", str(d / "m.jsonl"), "--out", str(d / "out.jsonl"), "--threads", "1"])
    return code, [json.loads(x) for x in (d / "out.jsonl").read_text().splitlines()]


def test_every_line_gets_a_record_in_order(analysed):
    code, rows = analysed
    assert code == 1  # some lines could not produce an event
    assert len(rows) == 5
    assert rows[1] == {"line": 2, "label": None, "error": rows[1]["error"]} and "line 2" in rows[1]["error"]
    assert [r.get("utterance") for r in rows] == [0, None, 1, 2, 3]


def test_text_events_are_calibrated_distributions(analysed):
    _, rows = analysed
    for r in (rows[0], rows[4]):
        assert list(r["probs"]) == list(LABELS)
        assert sum(r["probs"].values()) == pytest.approx(1, abs=1e-4)
        assert r["label"] == max(r["probs"], key=r["probs"].get)
        assert r["confidence"] == pytest.approx(r["probs"][r["label"]], abs=1e-6)
        assert r["label"] in r["prediction_set"]
        assert r["modalities"] == ["text"] and r["weights"] == {"text": pytest.approx(1.0)}
        assert r["degraded"] is False
        assert {"speaker", "conversation"} <= set(r["mood"])


def test_unusable_modalities_are_missing_not_fatal(analysed):
    _, rows = analysed
    text_and_bad_audio = rows[2]
    assert text_and_bad_audio["label"] in LABELS and text_and_bad_audio["modalities"] == ["text"]
    assert text_and_bad_audio["degraded"] is True and any("audio" in e for e in text_and_bad_audio["errors"])
    audio_only = rows[3]
    assert audio_only["label"] is None and "audio" in audio_only["error"]


def test_context_is_causal_and_mood_accumulates(analysed):
    _, rows = analysed
    assert rows[4]["mood"]["conversation"]["utterances"] == 3  # utterances 0, 1 and 3 produced events
    assert rows[0]["mood"]["conversation"]["utterances"] == 1


def test_missing_manifest_is_a_usage_error(tmp_path, capsys):
    assert main(["analyze", str(tmp_path / "nope.jsonl")]) == 2
    assert "no such file" in capsys.readouterr().err


def _page_data(html: str) -> dict:
    return json.loads(re.search(r'<script type="application/json" id="merc-data">(.*?)</script>', html, re.S).group(1))


def test_values_later_code_cannot_take_cost_only_their_line(tmp_path, capsys):
    lines = [{"conversation": "c", "utterance": 0, "text": "Hello there."},
             {"conversation": "c", "utterance": 1, "text": "bad \ud800"},  # JSON reads a lone surrogate; protobuf cannot carry it
             {"conversation": "c", "utterance": 2**32, "text": "big"},
             {"conversation": "c", "utterance": 3, "text": "Fine, thanks."}]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    code = main(["analyze", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "out.jsonl"), "--html", str(tmp_path / "r.html"),
                 "--threads", "1"])
    assert code == 1
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r.get("utterance", r.get("line")) for r in rows] == [0, 2, 3, 3]  # lines 2 and 3 are errors, named by line
    assert [r["label"] in LABELS for r in rows] == [True, False, False, True]
    err = capsys.readouterr().err
    assert "line 2: 'text' is not valid Unicode text" in err and "line 3: 'utterance' must be at most" in err
    page = _page_data((tmp_path / "r.html").read_text())
    assert page["failed_lines"] == 2 and [u["utterance"] for u in page["timelines"][0]["utterances"]] == [0, 3]


def test_a_run_that_stops_keeps_every_line_before_it(tmp_path, monkeypatch):
    """A bug on one line is that line's error; an interruption ends the run, --out and --html keep what came before."""
    monkeypatch.setattr(embedded, "LocalInference", lambda *_: TinyInference())  # the models do not matter here
    analyze_line = embedded.EmbeddedPipeline.analyze_line

    def flaky(self, u):
        if u.line == 2:
            raise RuntimeError("a bug")
        if u.line == 4:
            raise KeyboardInterrupt
        return analyze_line(self, u)

    monkeypatch.setattr(embedded.EmbeddedPipeline, "analyze_line", flaky)
    (tmp_path / "m.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in ("one", "two", "three", "four", "five")))
    with pytest.raises(KeyboardInterrupt):
        main(["analyze", str(tmp_path / "m.jsonl"), "--out", str(tmp_path / "out.jsonl"), "--html", str(tmp_path / "r.html")])
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["utterance"] for r in rows] == [0, 1, 2]
    assert rows[0]["label"] in LABELS and rows[2]["label"] in LABELS
    assert rows[1]["label"] is None and rows[1]["error"] == "line 2: unexpected error: RuntimeError: a bug"
    page = _page_data((tmp_path / "r.html").read_text())
    assert page["failed_lines"] == 1 and [u["utterance"] for u in page["timelines"][0]["utterances"]] == [0, 2]


def test_an_unwritable_out_is_a_usage_error(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text('{"text": "hi"}\n')
    assert main(["analyze", str(tmp_path / "m.jsonl"), "--out", str(tmp_path)]) == 2
    assert "cannot write" in capsys.readouterr().err


class _Unavailable(grpc.RpcError):
    def code(self):
        return grpc.StatusCode.UNAVAILABLE

    def details(self):
        return "gateway restarting"


class _Gateway:
    """The gateway and fusion, minus both: each request's event straight onto the bus; one utterance refused."""

    def __init__(self, bus: MemoryBus, topic: str, refuse: int) -> None:
        self.producer, self.topic, self.refuse = bus.producer(), topic, refuse
        self.sent: list[int] = []

    def AnalyzeUtterance(self, request, timeout=None, metadata=()):
        self.sent.append(request.utterance.sequence)
        if request.utterance.sequence == self.refuse:
            raise _Unavailable()
        event = events_pb2.EmotionEvent(utterance=request.utterance, label="joy")
        self.producer.send(self.topic, b"k", event.SerializeToString())
        return gateway_pb2.AnalyzeUtteranceResponse()


def test_remote_results_come_in_order_as_each_is_final_and_a_refused_line_costs_only_itself(tmp_path):
    cfg = Settings(tenant="t")
    bus, topic = MemoryBus(), cfg.topic(topics.EMOTIONS)
    events = bus.consumer(ConsumerSpec([topic], group_id=None, from_beginning=False))
    lines = [{"utterance": 0, "text": "a"}, "{oops", {"utterance": 1, "text": "b"}, {"utterance": 2, "text": "c"}]
    (tmp_path / "m.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    gateway = _Gateway(bus, topic, refuse=1)
    results = remote.send(tmp_path / "m.jsonl", gateway, events, cfg, timeout_s=5)
    first = next(results)
    assert first.event is not None and gateway.sent == [0]  # handed out before the next line is even sent
    rest = list(results)
    assert gateway.sent == [0, 1, 2]
    assert [r.line if r.utterance is None else r.utterance.line for r in rest] == [2, 3, 4]
    assert rest[0].event is None and "line 2: invalid JSON" in rest[0].errors[0]
    assert rest[1].event is None and rest[1].errors == ["line 3: UNAVAILABLE: gateway restarting"]
    assert rest[2].event is not None and rest[2].event.utterance.sequence == 2
