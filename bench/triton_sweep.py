"""Triton's batching settings for the text encoder: max_queue_delay and instance count, swept.

Needs the local stack's virtualenvs (`make install`; deploy/local/triton.sh installs Triton). For
each setting a second Triton serves a copy of the text encoder so edited (bench/triton_variant.py,
other ports; the stack's own Triton is left alone), and clients call it directly with what the
text encoder service sends (an utterance and its context, bench/latency.py's conversation):

  1 client    one call after another: the latency a quiet deployment sees
  N clients   --clients concurrent callers: sustained calls/s and the latency under that load

This is the perf_analyzer-style sweep the shipped config (model_repository/text_encoder/config.pbtxt)
is chosen from. Writes bench/results/triton_sweep.{md,json}.

    .venv/bin/python bench/triton_sweep.py --seconds 8 --clients 8
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path

import numpy as np
from latency import SENTENCES, context, percentiles
from throughput import run_clients
from triton_variant import variant_triton

from merc.inference.triton import TritonInference
from merc.pipeline import text_context
from merc.runtime.config import settings

DELAYS_US = (0, 500, 2000, 5000)
INSTANCES = (1, 2)


def configure(pbtxt: str, delay_us: int, instances: int) -> str:
    pbtxt = re.sub(r"max_queue_delay_microseconds: \d+", f"max_queue_delay_microseconds: {delay_us}", pbtxt)
    return re.sub(r"instance_group \[ \{ kind: KIND_CPU, count: \d+ \} \]", f"instance_group [ {{ kind: KIND_CPU, count: {instances} }} ]", pbtxt)


def load(url: str, clients: int, seconds: float, max_chars: int) -> dict:
    """``clients`` callers for ``seconds``: calls/s and per-call latency percentiles (ms)."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    stop = time.monotonic() + seconds

    def client(k: int) -> None:
        triton = TritonInference(url)
        i = k
        while time.monotonic() < stop:
            text, ctx = text_context.encoder_inputs(SENTENCES[i % len(SENTENCES)], context(i % 12), max_chars)
            t = time.perf_counter()
            triton.infer("text_encoder", {"TEXT": np.array([[text.encode()]], dtype=object),
                                          "CONTEXT": np.array([[ctx.encode()]], dtype=object)})
            latencies[k].append((time.perf_counter() - t) * 1000)
            i += clients
        triton.close()

    seconds_taken = run_clients(client, clients)
    calls = [ms for per in latencies for ms in per]
    return {"per_s": len(calls) / seconds_taken, **percentiles(calls)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "triton_sweep"))
    args = ap.parse_args()
    cfg = settings()
    rows = []
    for instances in INSTANCES:
        for delay in DELAYS_US:
            with variant_triton(["text_encoder"], lambda _, pbtxt, d=delay, n=instances: configure(pbtxt, d, n)) as url:
                load(url, args.clients, 1, cfg.max_text_chars)  # first calls settle
                one = load(url, 1, args.seconds, cfg.max_text_chars)
                many = load(url, args.clients, args.seconds, cfg.max_text_chars)
            rows.append({"instances": instances, "max_queue_delay_us": delay, "one_client": one, "clients": many})
            print(f"instances {instances} delay {delay} us: 1 client p50 {one['p50']:.1f} ms; "
                  f"{args.clients} clients {many['per_s']:.1f}/s p50 {many['p50']:.1f} p99 {many['p99']:.1f} ms", flush=True)
    report = {"command": f"python bench/triton_sweep.py --seconds {args.seconds:g} --clients {args.clients}", "rows": rows}
    Path(args.out + ".json").write_text(json.dumps(report, indent=2))
    md = ["# Triton batching settings: the text encoder", "",
          f"2-core CPU machine; a second Triton serving the text encoder with each setting; calls carry an utterance "
          f"and its context as the text encoder service sends them; {args.seconds:g} s per measurement. Latency in ms.", "",
          f"| instances | max_queue_delay (µs) | 1 client p50 | 1 client p99 | {args.clients} clients calls/s | p50 | p99 |",
          "|---|---|---|---|---|---|---|"]
    for r in rows:
        one, many = r["one_client"], r["clients"]
        md.append(f"| {r['instances']} | {r['max_queue_delay_us']} | {one['p50']:.1f} | {one['p99']:.1f} | "
                  f"{many['per_s']:.1f} | {many['p50']:.1f} | {many['p99']:.1f} |")
    md += ["", f"Command: `{report['command']}`"]
    Path(args.out + ".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
