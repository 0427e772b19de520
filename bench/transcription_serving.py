"""What server-side transcription costs an audio-only utterance, and how much of it is Whisper.

Needs the local stack and services (`make up`; its gateway transcribes, MERC_TRANSCRIBE_AUDIO=true).
Speech clips: examples/speech.flac, and RAVDESS clips when the data is beside the checkout (as the
README's data layout puts it). Measured in one run, one call at a time, on the same clips:

  model alone         Triton's `transcriber` (Whisper base, CTranslate2 int8), decoded audio in
  Transcribe          the audio encoder's RPC: decode + the model, the words back
  audio only          the gateway's AnalyzeUtterance with audio alone: transcribe, then the text
                      and audio encoders in parallel (fan-out), and the event read from Kafka
  baseline            the same utterance with its text sent by the client (the transcript the
                      gateway made for it): what a client that brings its own words pays

    PYTHONPATH=services .venv/bin/python bench/transcription_serving.py --utterances 24
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import threading
import time
import uuid
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf
from latency import percentiles

from merc.bus import make_bus
from merc.bus.base import ConsumerSpec
from merc.data.meld import DataUnavailable, data_root
from merc.data.ravdess import FOLDER, statement
from merc.evaluation.wer import word_error_rate
from merc.inference.triton import TritonInference
from merc.runtime.config import settings
from merc.v1 import common_pb2, encoder_pb2, encoder_pb2_grpc, events_pb2, gateway_pb2, gateway_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "speech.flac"
EXAMPLE_SAYS = "Thank you so much for calling. I am really happy to help you today."  # examples/README.md


def ravdess() -> Path | None:
    try:
        folder = data_root() / FOLDER
    except DataUnavailable:
        return None
    return folder if folder.is_dir() else None


def clips(n: int) -> list[Path]:
    """examples/speech.flac first, then one RAVDESS clip per actor (different ones), n in all, repeating."""
    found = [EXAMPLE]
    if (folder := ravdess()) is not None:
        for k, actor in enumerate(sorted(folder.glob("Actor_*"))):
            files = sorted(actor.glob("*.flac"))
            found.append(files[7 * k % len(files)])
    return [found[i % len(found)] for i in range(n)]


def seconds(path: Path) -> float:
    return sf.info(path).duration


class Events:
    """A read_committed reader of merc.emotions on its own thread, from before the first utterance is sent:
    when each (conversation, utterance) first got an event."""

    def __init__(self, cfg) -> None:
        self.consumer = make_bus(cfg).consumer(ConsumerSpec([cfg.topic("emotions")], group_id=None, from_beginning=False))
        self.seen: dict[tuple[str, int], float] = {}
        self.stop = threading.Event()
        deadline = time.monotonic() + 30
        while not self.consumer.assignment() and time.monotonic() < deadline:
            self.consumer.poll(timeout_ms=100)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while not self.stop.is_set():
            for m in self.consumer.poll(timeout_ms=50):
                if m.value is None:  # an erasure tombstone
                    continue
                e = events_pb2.EmotionEvent.FromString(m.value)
                self.seen.setdefault((e.utterance.conversation_id, e.utterance.sequence), time.time())

    def wait(self, conv: str, sequence: int, timeout_s: float = 60.0) -> float | None:
        deadline = time.monotonic() + timeout_s
        while (conv, sequence) not in self.seen and time.monotonic() < deadline:
            time.sleep(0.01)
        return self.seen.get((conv, sequence))

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.consumer.close()


def through_gateway(events: Events, gateway, paths: list[Path], texts: list[str] | None) -> dict:
    """One utterance at a time; ``texts`` None: audio alone (the gateway transcribes), else sent with each."""
    conv = f"bench-tr-{uuid.uuid4().hex[:8]}"
    call, total, transcripts, modalities = [], [], [], []
    for i, path in enumerate(paths):
        req = gateway_pb2.AnalyzeUtteranceRequest(utterance=common_pb2.UtteranceRef(conversation_id=conv, sequence=i, speaker="A"),
                                                  text=texts[i] if texts else "")
        req.audio.data = path.read_bytes()
        sent = time.time()
        reply = gateway.AnalyzeUtterance(req, timeout=120)
        call.append((time.time() - sent) * 1000)
        got = events.wait(conv, i)
        total.append((got - sent) * 1000 if got is not None else float("nan"))
        transcripts.append(reply.transcript)
        modalities.append([common_pb2.Modality.Name(m) for m in reply.modalities])
    return {"call": percentiles(call), "to_event": percentiles([t for t in total if t == t]), "lost": sum(t != t for t in total),
            "transcripts": transcripts, "modalities": modalities}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=24)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "transcription_serving"))
    args = ap.parse_args()
    cfg = settings()
    paths = clips(args.utterances)
    triton = TritonInference(cfg.triton_url, timeout_s=120)
    audio = encoder_pb2_grpc.EncoderServiceStub(grpc.insecure_channel(cfg.audio_encoder_url))
    gateway = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(f"127.0.0.1:{cfg.gateway_port}"))
    # One of each first, untimed: connections and the first call's lazy work are not what is measured.
    warm = paths[0]
    audio.Transcribe(encoder_pb2.TranscribeRequest(audio=encoder_pb2.Audio(data=warm.read_bytes())), timeout=120)

    model, rpc = [], []
    for path in paths:
        wave, _ = sf.read(path, dtype="float32")
        t = time.perf_counter()
        triton.infer("transcriber", {"WAVE": wave[None], "LENGTH": np.array([[len(wave)]], np.int64)})
        model.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        audio.Transcribe(encoder_pb2.TranscribeRequest(audio=encoder_pb2.Audio(data=path.read_bytes())), timeout=120)
        rpc.append((time.perf_counter() - t) * 1000)
    print(f"model and Transcribe: {len(paths)} clips each", file=sys.stderr)
    events = Events(cfg)
    try:
        spoken = through_gateway(events, gateway, paths, None)
        print("gateway, audio only: done", file=sys.stderr)
        given = through_gateway(events, gateway, paths, spoken["transcripts"])
    finally:
        events.close()
    audio_s = [seconds(p) for p in paths]
    report = {
        "command": f"PYTHONPATH=services .venv/bin/python bench/transcription_serving.py --utterances {args.utterances}",
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "clips": {"n": len(paths), "distinct": len(set(paths)), "ravdess": ravdess() is not None,
                  "mean_audio_s": float(np.mean(audio_s))},
        "model_alone": percentiles(model), "transcribe_rpc": percentiles(rpc),
        "audio_only": {k: v for k, v in spoken.items() if k != "transcripts"},
        "baseline_text_sent": {k: v for k, v in given.items() if k != "transcripts"},
        "transcribed": sum(bool(t.strip()) for t in spoken["transcripts"]),
        # Against the whole sentence: RAVDESS clips are cut at 2.39 s, so words cut off count as deleted.
        "wer": word_error_rate([(EXAMPLE_SAYS if p == EXAMPLE else statement(p), t) for p, t in zip(paths, spoken["transcripts"], strict=True)]),
        "model_version": triton.version("transcriber"),
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    out.with_suffix(".md").write_text(markdown(report))
    print(markdown(report))


def markdown(r: dict) -> str:
    a, b = r["audio_only"], r["baseline_text_sent"]
    rows = [("transcriber model alone (Triton)", r["model_alone"]), ("audio encoder Transcribe RPC", r["transcribe_rpc"]),
            ("gateway call, audio only (transcribes)", a["call"]), ("gateway call, text sent (baseline)", b["call"]),
            ("to the event, audio only", a["to_event"]), ("to the event, text sent (baseline)", b["to_event"])]
    lines = [
        "# Server-side transcription: what an audio-only utterance pays (bench/transcription_serving.py)", "",
        f"- command: `{r['command']}`",
        f"- machine: {r['machine']}, the whole local stack on it (`make up`), one call at a time",
        f"- clips: {r['clips']['n']} utterances of {r['clips']['distinct']} distinct speech clips "
        f"(examples/speech.flac{' and RAVDESS, one per actor' if r['clips']['ravdess'] else ''}), "
        f"{r['clips']['mean_audio_s']:.2f} s of audio on average",
        f"- model: {r['model_version']}; {r['transcribed']} of {r['clips']['n']} utterances got words; word error rate of the "
        f"gateway's transcripts against the whole sentence {r['wer']:.3f} (RAVDESS clips are cut at 2.39 s: a cut-off word counts "
        "as deleted; bench/results/transcription.md measures the same model on the client)",
        f"- events lost: audio only {a['lost']}, baseline {b['lost']}",
        "",
        "| stage | n | p50 ms | p95 ms | mean ms |",
        "|---|---|---|---|---|",
        *[f"| {name} | {p['n']} | {p['p50']:.1f} | {p['p95']:.1f} | {p['mean']:.1f} |" for name, p in rows],
        "",
        "| ratio (p50) | value |",
        "|---|---|",
        f"| gateway call, audio only / baseline | {a['call']['p50'] / b['call']['p50']:.2f} |",
        f"| to the event, audio only / baseline | {a['to_event']['p50'] / b['to_event']['p50']:.2f} |",
        f"| transcriber model alone / gateway call, audio only | {r['model_alone']['p50'] / a['call']['p50']:.2f} |",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
