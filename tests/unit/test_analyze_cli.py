"""`merc analyze` in embedded mode, with the real committed models."""

import io
import json
import queue
import re
import socket
import threading

import pytest
from conftest import REPO

from merc.analyze import embedded, remote
from merc.cli import _print_table, main
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


class _Call:
    """A StreamConversation call: the gateway's side reads the requests in a thread, as grpc does."""

    def __init__(self, gateway: "_Gateway", requests) -> None:
        self.responses: queue.Queue = queue.Queue()
        threading.Thread(target=self._serve, args=(gateway, requests), daemon=True).start()

    def _serve(self, gateway, requests) -> None:
        for req in requests:
            ref = req.utterance.utterance
            gateway.sent.append(req.utterance)
            if ref.sequence == gateway.refuse:
                rejected = gateway_pb2.Rejected(utterance=ref, code="UNAVAILABLE", reason="gateway restarting")
                self.responses.put(gateway_pb2.StreamConversationResponse(rejected=rejected))
            elif ref.sequence in gateway.analysed:  # merc.pipeline.resend
                rejected = gateway_pb2.Rejected(utterance=ref, code="ALREADY_EXISTS", reason="analysed already")
                self.responses.put(gateway_pb2.StreamConversationResponse(rejected=rejected))
            else:
                event = events_pb2.EmotionEvent(utterance=ref, label="joy")
                self.responses.put(gateway_pb2.StreamConversationResponse(event=event))
        self.responses.put(None)  # every answer given: the gateway ends the stream

    def __iter__(self):
        while (response := self.responses.get()) is not None:
            yield response

    def cancel(self) -> None:
        self.responses.put(None)


class _Gateway:
    """The gateway and fusion, minus both: each utterance's event straight back; one refused, some analysed before."""

    def __init__(self, refuse: int, analysed: tuple[int, ...] = ()) -> None:
        self.refuse, self.analysed = refuse, analysed
        self.sent: list[gateway_pb2.AnalyzeUtteranceRequest] = []
        self.metadata = None

    def StreamConversation(self, requests, metadata=()):
        self.metadata = metadata
        return _Call(self, requests)

    def GetConversation(self, request, timeout=None, metadata=()):
        ref = self.sent[0].utterance
        return gateway_pb2.GetConversationResponse(events=[
            events_pb2.EmotionEvent(utterance={"conversation_id": ref.conversation_id, "sequence": s}, label="anger")
            for s in self.analysed])


def test_remote_results_come_in_order_and_a_refused_line_costs_only_itself(tmp_path):
    lines = [{"utterance": 0, "text": "a"}, "{oops", {"utterance": 1, "text": "b"}, {"utterance": 2, "text": "c"},
             {"utterance": 3, "text": "d"}, {"utterance": 0, "text": "again"}]
    (tmp_path / "m.jsonl").write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    gateway = _Gateway(refuse=1, analysed=(3,))
    results = list(remote.send(tmp_path / "m.jsonl", gateway, Settings(tenant="t"), timeout_s=5))
    assert [r.utterance.sequence for r in gateway.sent] == [0, 1, 2, 3]
    assert [r.line if r.utterance is None else r.utterance.line for r in results] == [1, 2, 3, 4, 5, 6]
    assert results[0].event is not None and results[0].event.utterance.sequence == 0
    assert results[1].event is None and "line 2: invalid JSON" in results[1].errors[0]
    assert results[2].event is None and results[2].errors == ["line 3: UNAVAILABLE: gateway restarting"]
    assert results[3].event.utterance.sequence == 2
    # Analysed before (refused: ALREADY_EXISTS): the stored result, with a note saying so.
    assert results[4].event.label == "anger" and "analysed before" in results[4].notes[0]
    assert results[5].event is None and "is on line 1 already" in results[5].errors[0]
    # Without an API key the request names MERC_TENANT; the context is the run's own, as in embedded mode.
    assert {r.utterance.tenant for r in gateway.sent} == {"t"} and gateway.metadata == ()
    assert gateway.sent[2].context_text and "a" in gateway.sent[2].context_text


def test_remote_with_an_api_key_lets_the_key_name_the_tenant(tmp_path):
    (tmp_path / "m.jsonl").write_text(json.dumps({"text": "hi"}) + "\n")
    gateway = _Gateway(refuse=-1)
    (result,) = remote.send(tmp_path / "m.jsonl", gateway, Settings(tenant="default", api_key="k-123"), timeout_s=5)
    assert result.event is not None
    assert gateway.sent[0].utterance.tenant == "" and gateway.metadata == (("x-api-key", "k-123"),)


def test_an_unreachable_gateway_is_exit_3_with_one_line(tmp_path, capsys):
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code = main(["analyze", "--remote", f"127.0.0.1:{port}", "--timeout", "5", str(REPO / "examples/conversation.jsonl")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 3
    assert len(err) == 1 and err[0].startswith(f"merc analyze: the gateway at 127.0.0.1:{port}: UNAVAILABLE")


def test_version_and_the_exit_statuses_in_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and re.fullmatch(r"merc \S+\n", capsys.readouterr().out)
    with pytest.raises(SystemExit):
        main(["analyze", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for status in ("0 every line produced an event", "1 some did not", "2 usage error", "3 --remote: the gateway could not be reached"):
        assert status in text


def test_a_manifest_from_stdin_with_media_relative_to_the_working_directory(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(embedded, "LocalInference", lambda *_: TinyInference())
    (tmp_path / "broken.wav").write_bytes(b"not audio")
    monkeypatch.chdir(tmp_path)
    manifest = json.dumps({"speaker": "A", "text": "hello"}) + "\n" + json.dumps({"speaker": "B", "text": "hi", "audio": "broken.wav"}) + "\n"
    monkeypatch.setattr("sys.stdin", io.StringIO(manifest))
    assert main(["analyze", "-", "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["conversation"] for r in rows] == ["stdin", "stdin"]
    # The audio was found beside the working directory (and refused as not audio), not "missing".
    assert "audio" in rows[1]["errors"][0] and "no such file" not in rows[1]["errors"][0].lower()


def test_the_table_marks_a_line_with_a_note_and_prints_it_under_it(tmp_path, capsys):
    (tmp_path / "m.jsonl").write_text(json.dumps({"text": "a"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    gateway = _Gateway(refuse=-1, analysed=(1,))
    rows = [r.to_json() for r in remote.send(tmp_path / "m.jsonl", gateway, Settings(), timeout_s=5)]
    _print_table(rows)
    out = capsys.readouterr().out
    assert re.search(r"│ 1 \* +│", out) and not re.search(r"│ 0 \* +│", out)
    assert "* 1: no new event: this utterance was analysed before" in " ".join(out.split())
