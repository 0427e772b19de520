"""Idle conversations on the local stack: does memory come back once they are evicted?

Each round opens --conversations new conversations (one short text utterance each, through the
gateway, --clients at a time), waits for every event, then leaves them idle until fusion has
evicted them all (its merc_fusion_conversations gauge back at 0). Reported per round: the resident
memory of fusion and the gateway after opening and after eviction, against the same processes
before the first round (the baseline) and after the first round's eviction (flat means later
rounds add nothing). Python rarely returns freed memory to the system, so the test of a bound is
that round after round the figure stops growing, not that it falls.

Needs the stack with an idle time longer than a round takes to open, exported so this script
reports it too; `make bench-idle` does it all:
    export MERC_CONVERSATION_IDLE_S=240; make up
    .venv/bin/python bench/idle_conversations.py --conversations 10000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import re
import threading
import time
import urllib.request
import uuid
from concurrent import futures
from pathlib import Path

import grpc

from merc.bus import make_bus
from merc.bus.base import ConsumerSpec
from merc.runtime.config import settings
from merc.v1 import common_pb2, events_pb2, gateway_pb2, gateway_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
PROCESSES = ("fusion", "gateway")


def held(metrics_url: str) -> int:
    """Conversations fusion holds, from its Prometheus gauge."""
    text = urllib.request.urlopen(metrics_url, timeout=5).read().decode()
    found = re.search(r"^merc_fusion_conversations (\S+)$", text, re.M)
    if found is None:
        raise SystemExit(f"no merc_fusion_conversations on {metrics_url}: is this fusion's /metrics?")
    return int(float(found.group(1)))


def memory() -> dict[str, float]:
    from load import rss_mb  # bench/load.py: RSS of the services in .run/pids

    rss = rss_mb()
    missing = [p for p in PROCESSES if p not in rss]
    if missing:
        raise SystemExit(f"no running {', '.join(missing)} in .run/pids: start the stack with `make up` first")
    return {p: rss[p] for p in PROCESSES}


def open_conversations(stub, cfg, prefix: str, n: int, clients: int) -> None:
    auth = (("x-api-key", cfg.api_key),) if cfg.api_key else ()

    def one(i: int) -> None:
        ref = common_pb2.UtteranceRef(conversation_id=f"{prefix}-{i}", sequence=0, speaker="A")
        request = gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text="Hello, I'm calling about my order.")
        for _ in range(20):
            try:
                stub.AnalyzeUtterance(request, timeout=60, metadata=auth)
                return
            except grpc.RpcError as e:
                if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                    raise
                time.sleep(0.5)
        raise RuntimeError(f"conversation {i}: still refused after 20 tries")

    with futures.ThreadPoolExecutor(clients) as pool:
        for f in futures.as_completed([pool.submit(one, i) for i in range(n)]):
            f.result()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--conversations", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--gateway", default=None)
    ap.add_argument("--fusion-metrics", default="http://127.0.0.1:29070/metrics")
    ap.add_argument("--evict-timeout-s", type=float, default=900)
    ap.add_argument("--out", default=str(REPO / "bench" / "results" / "idle_conversations"))
    args = ap.parse_args()
    cfg = settings()
    stub = gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(args.gateway or f"127.0.0.1:{cfg.gateway_port}"))
    consumer = make_bus(cfg).consumer(ConsumerSpec([cfg.topic("emotions")], group_id=None, from_beginning=False))
    consumer.poll(timeout_ms=200)
    counted: dict[str, int] = {}
    lock = threading.Lock()
    stop = threading.Event()

    def count_events() -> None:
        while not stop.is_set():
            for m in consumer.poll(timeout_ms=200):
                if m.value is None:
                    continue
                prefix = events_pb2.EmotionEvent.FromString(m.value).utterance.conversation_id.rsplit("-", 1)[0]
                with lock:
                    counted[prefix] = counted.get(prefix, 0) + 1

    reader = threading.Thread(target=count_events, daemon=True)
    reader.start()
    baseline = memory()
    rounds = []
    for r in range(args.rounds):
        prefix = f"idle-{uuid.uuid4().hex[:6]}-r{r}"
        started = time.monotonic()
        open_conversations(stub, cfg, prefix, args.conversations, args.clients)
        while counted.get(prefix, 0) < args.conversations:
            if time.monotonic() - started > 1800:
                raise SystemExit(f"round {r}: {counted.get(prefix, 0)} of {args.conversations} events after 30 min")
            time.sleep(0.5)
        opened_s = time.monotonic() - started
        after_open, held_open = memory(), held(args.fusion_metrics)
        idle_from = time.monotonic()
        while held(args.fusion_metrics) > 0:
            if time.monotonic() - idle_from > args.evict_timeout_s:
                raise SystemExit(f"round {r}: fusion still holds conversations after {args.evict_timeout_s:g} s")
            time.sleep(2)
        rounds.append({"round": r + 1, "open_s": round(opened_s, 1), "held_after_open": held_open,
                       "evicted_after_s": round(time.monotonic() - idle_from, 1),
                       "after_open_mb": after_open, "after_eviction_mb": memory()})
        print(json.dumps(rounds[-1]), flush=True)
    stop.set()
    reader.join()
    consumer.close()

    first = rounds[0]["after_eviction_mb"]
    report = {
        "command": f"python bench/idle_conversations.py --conversations {args.conversations} --rounds {args.rounds} "
                   f"--clients {args.clients}",
        "conversation_idle_s": cfg.conversation_idle_s,
        "baseline_mb": baseline, "rounds": rounds,
        "growth_after_first_round_mb": {p: round(rounds[-1]["after_eviction_mb"][p] - first[p], 1) for p in PROCESSES},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    md = ["# Idle conversations: memory after eviction", "",
          f"{args.conversations} new conversations per round (one text utterance each, {args.clients} clients), then left "
          "idle until fusion evicted them all; resident memory (MB) of the two processes that hold per-conversation "
          "state. 2-core CPU machine, local stack.", "",
          "| round | opened in s | held by fusion | evicted after s | fusion after open | fusion after eviction | "
          "fusion / baseline | gateway after open | gateway after eviction | gateway / baseline |",
          "|---|---|---|---|---|---|---|---|---|---|",
          f"| baseline | | | | | {baseline['fusion']} | 1.00 | | {baseline['gateway']} | 1.00 |"]
    for x in rounds:
        o, e = x["after_open_mb"], x["after_eviction_mb"]
        md.append(f"| {x['round']} | {x['open_s']} | {x['held_after_open']} | {x['evicted_after_s']} | {o['fusion']} | "
                  f"{e['fusion']} | {e['fusion'] / baseline['fusion']:.2f} | {o['gateway']} | {e['gateway']} | "
                  f"{e['gateway'] / baseline['gateway']:.2f} |")
    growth = report["growth_after_first_round_mb"]
    md += ["", f"Growth from round 1's eviction to round {args.rounds}'s: fusion {growth['fusion']:+.1f} MB, "
               f"gateway {growth['gateway']:+.1f} MB.", "", f"Command: `{report['command']}` "
           f"(stack started with `MERC_CONVERSATION_IDLE_S={cfg.conversation_idle_s:g}`)"]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
