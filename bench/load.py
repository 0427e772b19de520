"""Load test on the local stack: N concurrent conversations at a conversational rate for M minutes.

Each conversation is a client thread sending one utterance every --interval-s seconds (jittered),
text with, for a share of them, 3 s of audio, retrying UNAVAILABLE as a client should. An
independent read_committed consumer counts the events. Reported: throughput, end-to-end latency
percentiles, events lost and duplicated (must be 0), and each service process's resident memory
at the start and the end (from .run/pids, so `make up` or the test stack's services must be running).

    .venv/bin/python bench/load.py --conversations 12 --minutes 2
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import grpc
import numpy as np

from merc.bus import make_bus
from merc.bus.base import ConsumerSpec
from merc.runtime.config import settings
from merc.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc

SENTENCES = [
    "Hi, I'm calling about my last invoice.", "It says I owe twice what I agreed to.", "That's really frustrating.",
    "Okay, thank you, that helps a lot.", "Can you send me a confirmation?", "Great, have a nice day!",
    "I've been waiting for forty minutes.", "No, that's not what I asked for.", "Oh wow, that was quick!",
]
REPO = Path(__file__).resolve().parents[1]


def rss_mb() -> dict[str, float]:
    run = Path(os.environ.get("MERC_RUN_DIR", REPO / ".run"))
    out = {}
    for pid_file in sorted((run / "pids").glob("*.pid")):
        try:
            status = Path(f"/proc/{int(pid_file.read_text())}/status").read_text()
        except (OSError, ValueError):
            continue
        kb = next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")), None)
        if kb is not None:
            out[pid_file.stem] = round(kb / 1024, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=12)
    ap.add_argument("--minutes", type=float, default=2.0)
    ap.add_argument("--interval-s", type=float, default=2.0, help="mean time between a conversation's utterances")
    ap.add_argument("--audio-share", type=float, default=0.3, help="share of utterances that also carry 3 s of audio")
    ap.add_argument("--gateway", default=None)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "load"))
    args = ap.parse_args()
    cfg = settings()
    from latency import media  # bench/latency.py: the same synthetic 3 s voice

    audio, _ = media()
    stub = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(args.gateway or f"127.0.0.1:{cfg.gateway_port}"))
    consumer = make_bus(cfg).consumer(ConsumerSpec([cfg.topic("emotions")], group_id=None, from_beginning=False))
    consumer.poll(timeout_ms=200)
    run_id = uuid.uuid4().hex[:6]
    convs = [f"load-{run_id}-{i}" for i in range(args.conversations)]
    sent: dict[tuple[str, int], float] = {}
    received: list[tuple[str, int, int, float]] = []
    stop_sending = time.monotonic() + args.minutes * 60
    retries = Counter()
    lock = threading.Lock()

    def client(conv: str, seed: int) -> None:
        rng = random.Random(seed)
        seq = 0
        while time.monotonic() < stop_sending:
            ref = common_pb2.UtteranceRef(conversation_id=conv, sequence=seq, speaker="AB"[seq % 2])
            req = gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=rng.choice(SENTENCES))
            if rng.random() < args.audio_share:
                req.audio.data = audio
            with lock:
                sent[(conv, seq)] = time.time()
            while True:
                try:
                    stub.AnalyzeUtterance(req, timeout=30)
                    break
                except grpc.RpcError as e:
                    if e.code() != grpc.StatusCode.UNAVAILABLE:
                        raise
                    retries[conv] += 1
                    time.sleep(0.5)
            seq += 1
            time.sleep(rng.uniform(0.5, 1.5) * args.interval_s)

    memory_start = rss_mb()
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(c, i), daemon=True) for i, c in enumerate(convs)]
    for t in threads:
        t.start()
    wanted = set(convs)
    while any(t.is_alive() for t in threads) or len({(c, s) for c, s, _, _ in received}) < len(sent):
        for m in consumer.poll(timeout_ms=200):
            if m.value is None:
                continue
            e = events_pb2.EmotionEvent.FromString(m.value)
            if e.utterance.conversation_id in wanted:
                received.append((e.utterance.conversation_id, e.utterance.sequence, e.revision, time.time()))
        if time.monotonic() - stop_sending > 60:
            break
    wall = time.monotonic() - started
    consumer.close()
    memory_end = rss_mb()

    counts = Counter((c, s, r) for c, s, r, _ in received)
    first = {}
    for c, s, r, t in received:
        if r == 0:
            first.setdefault((c, s), t)
    latency = np.array([(first[k] - sent[k]) * 1000 for k in first if k in sent])
    report = {
        "command": f"python bench/load.py --conversations {args.conversations} --minutes {args.minutes:g} "
                   f"--interval-s {args.interval_s:g} --audio-share {args.audio_share:g}",
        "utterances_sent": len(sent), "events_received": len(first),
        "lost": len(set(sent) - set(first)), "duplicated": sum(n - 1 for n in counts.values() if n > 1),
        "revisions": sum(1 for _, _, r in counts if r > 0), "client_retries": sum(retries.values()),
        "throughput_per_s": round(len(first) / wall, 2),
        "latency_ms": {"p50": float(np.percentile(latency, 50)), "p95": float(np.percentile(latency, 95)),
                       "p99": float(np.percentile(latency, 99)), "max": float(latency.max())},
        "memory_mb": {name: {"start": memory_start.get(name), "end": memory_end.get(name)} for name in sorted(memory_end)},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    md = [
        "# Load test on the local stack",
        "",
        f"{args.conversations} concurrent conversations, one utterance every ~{args.interval_s:g} s each (jittered), "
        f"{args.minutes:g} min; {args.audio_share:.0%} of utterances also carry 3 s of audio. 2-core CPU machine, everything local.",
        "",
        "| utterances | events | lost | duplicated | throughput / s | p50 ms | p95 ms | p99 ms | client retries |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| {report['utterances_sent']} | {report['events_received']} | {report['lost']} | {report['duplicated']} | "
        f"{report['throughput_per_s']} | {report['latency_ms']['p50']:.0f} | {report['latency_ms']['p95']:.0f} | "
        f"{report['latency_ms']['p99']:.0f} | {report['client_retries']} |",
        "",
        "| process | RSS at start (MB) | RSS at end (MB) |",
        "|---|---|---|",
        *[f"| {n} | {v['start']} | {v['end']} |" for n, v in report["memory_mb"].items()],
        "",
        f"Command: `{report['command']}`",
    ]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
