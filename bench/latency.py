"""End-to-end latency by modality mix, stage by stage: gateway call -> EmotionEvent read from Kafka.

Needs the local stack and services (`make up`). Mixes: text; text + 3 s of audio; text + 3 s of
audio + 5 face crops. Stages of each utterance:

  fan-out   the gateway's AnalyzeUtterance call: encoders in parallel (decode, features, Triton,
            quality signals) and their Kafka produce, and the reply back to the client
  rest      call return -> event read: join, causal context, fusion model on Triton, store
            upsert, transaction commit, delivery (the fusion often starts before the reply lands)
  emit→read the event's emitted_at_ms -> read: transaction commit and a read_committed consumer's
            fetch (it can exceed `rest`: the fusion often emits before the gateway's reply lands)

Text carries its context (the turns before it, merc.pipeline.text_context) as a client sends it. Each encoder
service is also timed on its own (Encode, same inputs). Baseline in the same run: the
same utterances through the embedded pipeline (same models in-process, no servers).

    .venv/bin/python bench/latency.py --utterances 100
"""

from __future__ import annotations

import argparse
import io
import json
import os
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import grpc
import numpy as np
import soundfile as sf
from PIL import Image

from merc.analyze.embedded import EmbeddedPipeline
from merc.analyze.manifest import Utterance
from merc.bus import make_bus
from merc.bus.base import ConsumerSpec
from merc.pipeline.text_context import causal_context
from merc.runtime.config import Settings, settings
from merc.v1 import (
    common_pb2,
    encoder_pb2,
    encoder_pb2_grpc,
    events_pb2,
    gateway_pb2,
    gateway_pb2_grpc,
)

SENTENCES = [
    "Thanks for calling, how can I help you today?",
    "My order still hasn't arrived and I'm getting really annoyed.",
    "I'm so sorry about that, let me check right away.",
    "Wow, that's fantastic news, thank you!",
    "I don't know, I guess that's fine.",
    "Wait, what? You cancelled it?",
    "That is absolutely disgusting service.",
    "I'm scared I'll lose my booking.",
]
MIXES = {"text": ("text",), "text+audio": ("text", "audio"), "text+audio+vision": ("text", "audio", "vision")}


def media(seed: int = 0) -> tuple[bytes, list[bytes]]:
    """3 s of a voiced, pitch-varying tone at 16 kHz (WAV) and 5 distinct 48x48 face-like crops (PNG)."""
    rng = np.random.default_rng(seed)
    t = np.arange(3 * 16_000) / 16_000
    f0 = 130 + 30 * np.sin(2 * np.pi * 0.8 * t)
    wave = 0.2 * sum(np.sin(2 * np.pi * k * np.cumsum(f0) / 16_000) / k for k in range(1, 8)) + 0.005 * rng.standard_normal(len(t))
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), 16_000, format="WAV")
    faces = []
    for i in range(5):
        img = (rng.random((48, 48)) * 50 + 100).astype(np.uint8)
        img[15:19, 12:20] = img[15:19, 28:36] = 20 + 5 * i
        img[33:36, 16:32] = 30
        b = io.BytesIO()
        Image.fromarray(img).save(b, format="PNG")
        faces.append(b.getvalue())
    return buf.getvalue(), faces


# Each service's /metrics (deploy/local/services.sh's ports): the stage histograms they keep anyway.
METRICS = {"gateway": ("MERC_GATEWAY_METRICS_PORT", 29050), "encoder-text": ("MERC_TEXT_ENCODER_METRICS_PORT", 29061),
           "encoder-audio": ("MERC_AUDIO_ENCODER_METRICS_PORT", 29062), "encoder-vision": ("MERC_VISION_ENCODER_METRICS_PORT", 29063),
           "fusion": ("MERC_FUSION_METRICS_PORT", 29070)}
# Histograms whose mean per observation is a stage of an utterance's path, as (service, family, label).
STAGES = [("gateway", "merc_grpc_server_handling_seconds", "method"), ("gateway", "merc_gateway_fanout_seconds", "modality"),
          ("encoder-text", "merc_encoder_stage_seconds", "stage"), ("encoder-text", "merc_inference_seconds", "model"),
          ("encoder-audio", "merc_encoder_stage_seconds", "stage"), ("encoder-vision", "merc_encoder_stage_seconds", "stage"),
          ("fusion", "merc_fusion_stage_seconds", "stage"), ("fusion", "merc_inference_seconds", "model"),
          ("fusion", "merc_fusion_join_wait_seconds", "outcome")]


def scrape() -> dict[tuple[str, str, str], tuple[float, float]]:
    """(service, family, label value) -> (sum, count) of the stage histograms; a service not answering is left out."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[tuple[str, str, str], list[float]] = {}
    for service, (env, default) in METRICS.items():
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{os.environ.get(env, default)}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue
        for family in text_string_to_metric_families(text):
            for svc, name, label in STAGES:
                if svc != service or family.name != name:
                    continue
                for sample in family.samples:
                    if sample.name in (name + "_sum", name + "_count") and label in sample.labels:
                        slot = out.setdefault((service, name, sample.labels[label]), [0.0, 0.0])
                        slot[sample.name.endswith("_count")] += sample.value
    return {k: (v[0], v[1]) for k, v in out.items()}


def stage_means(before: dict, after: dict) -> dict[str, dict]:
    """Mean ms per observation of each stage between two scrapes (only stages observed in between)."""
    out = {}
    for key, (total, count) in sorted(after.items()):
        total0, count0 = before.get(key, (0.0, 0.0))
        if count > count0:
            out[" ".join(key)] = {"n": int(count - count0), "mean_ms": (total - total0) * 1000 / (count - count0)}
    return out


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms, dtype=np.float64)
    if a.size == 0:
        return {"n": 0}
    return {"n": int(a.size), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def context(i: int) -> str:
    """What a client sends as context_text for utterance i (as merc analyze --remote does): the turns before it."""
    return causal_context([("AB"[j % 2] == "AB"[i % 2], SENTENCES[j % len(SENTENCES)]) for j in range(i)])


def request(conv: str, i: int, mix: tuple[str, ...], audio: bytes, faces: list[bytes]) -> gateway_pb2.AnalyzeUtteranceRequest:
    req = gateway_pb2.AnalyzeUtteranceRequest(
        utterance=common_pb2.UtteranceRef(conversation_id=conv, sequence=i, speaker="AB"[i % 2]), text=SENTENCES[i % len(SENTENCES)],
        context_text=context(i))
    if "audio" in mix:
        req.audio.data = audio
    if "vision" in mix:
        req.faces.extend(encoder_pb2.Image(data=f) for f in faces)
    return req


def run_stack(cfg, gateway: str, mix: tuple[str, ...], n: int, gap_s: float, audio: bytes, faces: list[bytes]) -> dict:
    consumer = make_bus(cfg).consumer(ConsumerSpec([cfg.topic("emotions")], group_id=None, from_beginning=False))
    consumer.poll(timeout_ms=200)
    conv = f"bench-{uuid.uuid4().hex[:8]}"
    got: dict[int, tuple[float, events_pb2.EmotionEvent]] = {}
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for m in consumer.poll(timeout_ms=50):
                if m.value is None:  # an erasure tombstone
                    continue
                e = events_pb2.EmotionEvent.FromString(m.value)
                if e.utterance.conversation_id == conv and e.utterance.sequence not in got:
                    got[e.utterance.sequence] = (time.time(), e)
            if len(got) >= n:
                done.set()

    reader = threading.Thread(target=read)
    reader.start()
    stub = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(gateway))
    sent, returned = {}, {}
    for i in range(n):
        req = request(conv, i, mix, audio, faces)
        sent[i] = time.time()
        stub.AnalyzeUtterance(req, timeout=30)
        returned[i] = time.time()
        time.sleep(gap_s)
    done.wait(timeout=60)
    done.set()
    reader.join()
    consumer.close()
    ok = [i for i in range(n) if i in got]
    stages = {
        "total": [(got[i][0] - sent[i]) * 1000 for i in ok],
        "fan-out": [(returned[i] - sent[i]) * 1000 for i in ok],
        "rest": [(got[i][0] - returned[i]) * 1000 for i in ok],
        "delivery": [got[i][0] * 1000 - got[i][1].emitted_at_ms for i in ok],
    }
    degraded = sum(1 for i in ok if got[i][1].degraded)
    return {"stages": {k: percentiles(v) for k, v in stages.items()}, "lost": n - len(ok), "degraded": degraded}


def run_encoders(cfg, n: int, audio: bytes, faces: list[bytes]) -> dict:
    """Each encoder service's own Encode latency (publishes too: these utterances join nothing and expire)."""
    out = {}
    for modality, url in (("text", cfg.text_encoder_url), ("audio", cfg.audio_encoder_url), ("vision", cfg.vision_encoder_url)):
        stub = encoder_pb2_grpc.EncoderServiceStub(grpc.insecure_channel(url))
        conv, ms = f"bench-enc-{uuid.uuid4().hex[:8]}", []
        for i in range(n):
            req = encoder_pb2.EncodeRequest(utterance=common_pb2.UtteranceRef(conversation_id=conv, sequence=i))
            if modality == "text":
                req.text, req.context_text = SENTENCES[i % len(SENTENCES)], context(i)
            elif modality == "audio":
                req.audio.data = audio
            else:
                req.faces.extend(encoder_pb2.Image(data=f) for f in faces)
            t = time.perf_counter()
            stub.Encode(req, timeout=30)
            ms.append((time.perf_counter() - t) * 1000)
        out[modality] = percentiles(ms)
    return out


def run_embedded(mix: tuple[str, ...], n: int, tmp: Path, audio: bytes, faces: list[bytes]) -> dict:
    (tmp / "a.wav").write_bytes(audio)
    paths = []
    for k, f in enumerate(faces):
        (tmp / f"f{k}.png").write_bytes(f)
        paths.append(tmp / f"f{k}.png")
    pipeline = EmbeddedPipeline(Settings(inference="local", torch_threads=1))
    ms = []
    try:
        for i in range(n):
            u = Utterance(line=i + 1, conversation="bench", utterance=i, speaker="AB"[i % 2], text=SENTENCES[i % len(SENTENCES)],
                          audio=tmp / "a.wav" if "audio" in mix else None, faces=paths if "vision" in mix else [])
            t = time.perf_counter()
            pipeline.analyze_line(u)
            ms.append((time.perf_counter() - t) * 1000)
    finally:
        pipeline.close()
    return percentiles(ms)


def main() -> None:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=100, help="per modality mix")
    ap.add_argument("--gap-ms", type=float, default=100, help="pause between utterances (low load)")
    ap.add_argument("--gateway", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency"))
    args = ap.parse_args()
    cfg = settings()
    gateway = args.gateway or f"127.0.0.1:{cfg.gateway_port}"
    audio, faces = media()
    # Warm every path once (first calls load lazily); not measured.
    run_stack(cfg, gateway, MIXES["text+audio+vision"], 3, 0.1, audio, faces)
    report = {"command": f"python bench/latency.py --utterances {args.utterances} --gap-ms {args.gap_ms:g}",
              "join_window_ms": cfg.join_window_ms, "mixes": {}, "encoders": run_encoders(cfg, min(args.utterances, 50), audio, faces)}
    with tempfile.TemporaryDirectory() as tmp:
        for name, mix in MIXES.items():
            before = scrape()
            stack = run_stack(cfg, gateway, mix, args.utterances, args.gap_ms / 1000, audio, faces)
            stack["service_stages"] = stage_means(before, scrape())
            embedded = run_embedded(mix, args.utterances, Path(tmp), audio, faces)
            report["mixes"][name] = {"stack": stack, "embedded": embedded,
                                     "ratio_p50_stack_over_embedded": stack["stages"]["total"]["p50"] / embedded["p50"]}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    md = [
        "# End-to-end latency by modality mix",
        "",
        f"Gateway AnalyzeUtterance -> EmotionEvent read from Kafka (read_committed), one conversation per mix, "
        f"{args.utterances} utterances {args.gap_ms:g} ms apart (low load); audio 3 s at 16 kHz, vision 5 face crops. "
        f"Join window {cfg.join_window_ms} ms. Baseline: the same utterances through the embedded pipeline in-process.",
        "",
        "| mix | n | total p50 | p95 | p99 | fan-out p50 | rest p50 | emit→read p50 | embedded p50 | stack / embedded | lost | degraded |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in report["mixes"].items():
        s, e = r["stack"]["stages"], r["embedded"]
        md.append(f"| {name} | {s['total']['n']} | {s['total']['p50']:.1f} | {s['total']['p95']:.1f} | {s['total']['p99']:.1f} | "
                  f"{s['fan-out']['p50']:.1f} | {s['rest']['p50']:.1f} | {s['delivery']['p50']:.1f} | {e['p50']:.1f} | "
                  f"{r['ratio_p50_stack_over_embedded']:.2f} | {r['stack']['lost']} | {r['stack']['degraded']} |")
    md += ["", "All times in ms. fan-out: the gateway call (encoders in parallel + Kafka produce + reply); rest: reply → "
           "event read; emit→read: the event's emitted_at_ms → read (commit + fetch; it can exceed rest, as the fusion "
           "often emits before the reply lands). Text carries its context (the three turns before it, "
           "merc.pipeline.text_context), as in the embedded baseline. Each encoder service alone (Encode, same inputs):", "",
           "| encoder | n | p50 | p95 | p99 |", "|---|---|---|---|---|"]
    for m, p in report["encoders"].items():
        md.append(f"| {m} | {p['n']} | {p['p50']:.1f} | {p['p95']:.1f} | {p['p99']:.1f} |")
    md += ["", "Where the time goes, from the services' own stage histograms over each mix's run (mean ms per "
           "observation; the gateway's and fusion's stages are per call and per fusion step):", "",
           "| stage | " + " | ".join(report["mixes"]) + " |", "|---|" + "---|" * len(report["mixes"])]
    keys = list(dict.fromkeys(k for r in report["mixes"].values() for k in r["stack"]["service_stages"]))
    for k in keys:
        cells = [r["stack"]["service_stages"].get(k) for r in report["mixes"].values()]
        md.append(f"| {k} | " + " | ".join(f"{c['mean_ms']:.1f}" if c else "" for c in cells) + " |")
    md += ["", f"Command: `{report['command']}` (on the local stack, 2-core CPU machine)"]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
