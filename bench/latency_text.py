"""End-to-end latency of the text path: gateway call -> EmotionEvent read from Kafka.

Needs the local stack and services (`make up`). Baseline in the same run: the
same utterances through the embedded pipeline (same models in-process, no
servers), so the report shows what the microservices cost on top of the maths.

    .venv/bin/python bench/latency_text.py --utterances 200
"""

from __future__ import annotations

import argparse
import json
import threading
import time
import uuid
from pathlib import Path

import grpc
import numpy as np

from merc.bus import make_bus
from merc.bus.base import ConsumerSpec
from merc.config import Settings, settings
from merc.embedded import EmbeddedPipeline
from merc.manifest import Utterance
from merc.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc

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


def percentiles(ms: list[float]) -> dict:
    a = np.asarray(ms)
    return {"n": len(a), "p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)), "p99": float(np.percentile(a, 99)), "mean": float(a.mean())}


def run_stack(cfg, gateway: str, n: int, gap_s: float) -> list[float]:
    consumer = make_bus(cfg).consumer(ConsumerSpec([cfg.topic("emotions")], group_id=None, from_beginning=False))
    consumer.poll(timeout_ms=200)
    conv = f"bench-{uuid.uuid4().hex[:8]}"
    sent: dict[int, float] = {}
    got: dict[int, float] = {}
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for m in consumer.poll(timeout_ms=100):
                e = events_pb2.EmotionEvent.FromString(m.value)
                if e.utterance.conversation_id == conv:
                    got.setdefault(e.utterance.sequence, time.perf_counter())
            if len(got) >= n:
                done.set()

    reader = threading.Thread(target=read)
    reader.start()
    stub = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(gateway))
    for i in range(n):
        ref = common_pb2.UtteranceRef(conversation_id=conv, sequence=i, speaker="AB"[i % 2])
        sent[i] = time.perf_counter()
        stub.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=SENTENCES[i % len(SENTENCES)]), timeout=30)
        time.sleep(gap_s)
    done.wait(timeout=60)
    done.set()
    reader.join()
    consumer.close()
    return [(got[i] - sent[i]) * 1000 for i in range(n) if i in got]


def run_embedded(n: int) -> list[float]:
    pipeline = EmbeddedPipeline(Settings(inference="local", torch_threads=1))
    out = []
    try:
        for i in range(n):
            u = Utterance(line=i + 1, conversation="bench", utterance=i, speaker="AB"[i % 2], text=SENTENCES[i % len(SENTENCES)])
            t = time.perf_counter()
            pipeline.analyze_line(u)
            out.append((time.perf_counter() - t) * 1000)
    finally:
        pipeline.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--utterances", type=int, default=200)
    ap.add_argument("--gap-ms", type=float, default=50, help="pause between utterances (low load)")
    ap.add_argument("--gateway", default=None)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "latency_text"))
    args = ap.parse_args()
    cfg = settings()
    gateway = args.gateway or f"127.0.0.1:{cfg.gateway_port}"
    stack_ms = run_stack(cfg, gateway, args.utterances, args.gap_ms / 1000)
    embedded_ms = run_embedded(args.utterances)
    s, e = percentiles(stack_ms), percentiles(embedded_ms)
    report = {
        "what": "text-only utterance: gateway AnalyzeUtterance call -> EmotionEvent read from Kafka (read_committed)",
        "stack": s,
        "baseline_embedded_in_process": e,
        "ratio_p50_stack_over_embedded": s["p50"] / e["p50"],
        "lost": args.utterances - len(stack_ms),
        "command": f"python bench/latency_text.py --utterances {args.utterances} --gap-ms {args.gap_ms}",
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    md = [
        "# End-to-end latency, text path",
        "",
        report["what"] + f"; {args.utterances} utterances, {args.gap_ms:.0f} ms apart, one conversation.",
        "",
        "| path | n | p50 ms | p95 ms | p99 ms | mean ms |",
        "|---|---|---|---|---|---|",
        f"| local stack (gateway → encoder → Triton → Kafka → fusion → Kafka) | {s['n']} | {s['p50']:.1f} | {s['p95']:.1f} | {s['p99']:.1f} | {s['mean']:.1f} |",
        f"| baseline: embedded, in-process | {e['n']} | {e['p50']:.1f} | {e['p95']:.1f} | {e['p99']:.1f} | {e['mean']:.1f} |",
        "",
        f"Stack / embedded p50 ratio: {report['ratio_p50_stack_over_embedded']:.2f}. Lost: {report['lost']}.",
        "",
        f"Command: `{report['command']}`",
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
