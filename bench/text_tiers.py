"""The two text tiers side by side: MiniLM (the CPU default) and mpnet (the larger tier), as served.

Each tier is its text encoder as the Triton model loads it (base + merged MELD adapter, ONNX Runtime
where `merc onnx` exported the folder, else torch), fed MELD dev utterances with the three turns
before them as context, the way the gateway sends them. On the device given:

  one       one utterance per call (a quiet deployment: Triton's batcher finds nothing to batch)
  batch     32 utterances per call (a busy one), reported per utterance
  graph     the transformer alone at batch 1, inputs tokenized beforehand: what tokenizing adds

Ratios are against the MiniLM tier in the same run. Each device's figures are kept in
bench/results/text_tiers.json under its name, so a CPU run here and a GPU run on a lent machine
make one report (text_tiers.md), beside each tier's MELD dev score from its training report.

    .venv/bin/python bench/text_tiers.py --device cpu --threads 2
    python3 bench/text_tiers.py --device cuda --large DIR    # DIR: the mpnet adapter folder
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from merc.data.meld import load_split
from merc.models import text_encoder as te
from merc.pipeline import text_context
from merc.training.artifacts import pm
from merc.training.text_report import RUN_TABLE, run_rows

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
TIERS = {"minilm": ROOT / "model_repository" / "text_encoder" / "1",
         "mpnet": ROOT / "model_repository" / "text_encoder" / "1" / "mpnet"}


def dev_inputs(n: int) -> tuple[list[str], list[str]]:
    texts, contexts = [], []
    for d in load_split("dev"):
        said = text_context.dialogue_contexts([(u.speaker, u.text) for u in d.utterances])
        for u, context in zip(d.utterances, said, strict=True):
            texts.append(u.text)
            contexts.append(context)
    return texts[:n], contexts[:n]


def _ms(samples: list[float]) -> dict:
    a = np.asarray(samples) * 1000
    return {"p50_ms": round(float(np.percentile(a, 50)), 3), "p95_ms": round(float(np.percentile(a, 95)), 3)}


def measure(enc: te.TextEncoder, texts: list[str], contexts: list[str], batch: int = 32) -> dict:
    for i in range(10):
        enc.encode([texts[i]], [contexts[i]])
    one = []
    for t, c in zip(texts, contexts, strict=True):
        t0 = time.perf_counter()
        enc.encode([t], [c])
        one.append(time.perf_counter() - t0)
    per = []
    for s in range(0, len(texts) - batch + 1, batch):
        t0 = time.perf_counter()
        enc.encode(texts[s : s + batch], contexts[s : s + batch], batch_size=batch)
        per.append((time.perf_counter() - t0) / batch)
    graph = []
    for t, c in zip(texts, contexts, strict=True):
        b = te.tokenize(enc.tokenizer, [t], [c], enc.max_length)
        arrays = (b["input_ids"].numpy(), b["attention_mask"].numpy(), b["token_type_ids"].numpy())
        t0 = time.perf_counter()
        enc.run(*arrays)
        graph.append(time.perf_counter() - t0)
    return {"version": enc.version, "dim": enc.dim, "backend": enc.run.backend, "one": _ms(one),
            "batch": {**_ms(per), "batch": batch, "per_s": round(1 / float(np.mean(per)), 1)}, "graph": _ms(graph)}


# Each tier's scores on MELD dev: the seeds of the recipe it ships (each adapter with its own training
# head), and through the fusion network, text only (the served pipeline's text figure, 3 fusion seeds).
SCORES = {
    "minilm": {"recipe": [RESULTS / "text_runs" / r for r in ("ctx3spk-a", "ctx3spk-b", "ctx3spk-c")],
               "fusion": RESULTS / "fusion.json"},
    "mpnet": {"recipe": [RESULTS / "mpnet" / "text_runs" / "lr1e-4"], "shipped": RESULTS / "mpnet" / "text_adapter.json",
              "fusion": RESULTS / "mpnet" / "fusion.json"},
}


def _scores() -> list[str]:
    rows = []
    for tier, src in SCORES.items():
        seeds = [s["dev"]["weighted_f1"] for run in src["recipe"]
                 for s in json.loads((run / "text_adapter.json").read_text())["per_seed"]]
        shipped = "—"
        if "shipped" in src:
            [s] = json.loads(src["shipped"].read_text())["per_seed"]
            shipped = f"{s['dev']['weighted_f1']:.4f} (seed {s['seed']})"
        fusion = json.loads(src["fusion"].read_text())["per_seed"]
        text = [f["patterns"]["text"]["weighted_f1"] for f in fusion]
        rows.append(f"| {tier} | {pm(seeds)} ({len(seeds)} seeds) | {shipped} | {pm(text)} |")
    return rows


def _patterns() -> list[str]:
    """Each tier's fusion on every modality pattern: text-only is real MELD; the rest pair voices and faces by label."""
    runs = {tier: json.loads(src["fusion"].read_text())["per_seed"] for tier, src in SCORES.items()}
    keys = list(runs["minilm"][0]["patterns"])
    rows = ["| tier | " + " | ".join(keys) + " | best held-out epoch per seed |", "|---|" + "---|" * (len(keys) + 1)]
    for tier, seeds in runs.items():
        rows.append(f"| {tier} | " + " | ".join(pm([s["patterns"][k]["weighted_f1"] for s in seeds]) for k in keys)
                    + f" | {', '.join(str(s['epoch']) for s in seeds)} |")
    return rows


def report(runs: dict) -> str:
    lines = ["# Text tiers: MiniLM (default) and mpnet (larger), as served", "",
             "Command: `python bench/text_tiers.py --device DEVICE` (module docstring). Inputs: MELD dev utterances in",
             "dialogue order, each with the three turns before it as context. Latency per utterance; ratios against",
             "MiniLM in the same run.", "", "## MELD dev, weighted F1", "",
             "Encoder alone: the seeds of the recipe each tier ships, each with its own training head (`text_runs/`).",
             "Through the fusion, text only: the tier's own fusion network over the shipped adapter, 3 fusion seeds",
             "(`fusion.md`, `mpnet/fusion.md`). Nothing here was selected on dev.", "",
             "| tier | encoder alone, recipe seeds | shipped adapter alone | through the fusion, text only |",
             "|---|---|---|---|", *_scores(), "",
             "Through each tier's fusion, every modality pattern (MELD dev; voices and faces paired by label from",
             "RAVDESS actors 19-20 and FER2013 publictest half B, as in `fusion.md`; 3 fusion seeds; how many epochs",
             "each could train was chosen on voices and faces it had not seen, the training pools in two folds):", "",
             *_patterns(), "",
             "## mpnet recipes tried (H200, `merc train text --base mpnet --device cuda`, LoRA rank 8)", "",
             *RUN_TABLE, *run_rows(sorted((RESULTS / "mpnet" / "text_runs").iterdir())), ""]
    for device, run in runs.items():
        base = run["tiers"]["minilm"]
        lines += [f"## {device}: {run['machine']}", "", f"{run['utterances']} utterances; command `{run['command']}`. {run.get('note', '')}", "",
                  "| tier | backend | one: p50 ms | p95 ms | ×MiniLM | batch of 32: ms/utterance | utterances/s | ×MiniLM "
                  "| graph alone p50 ms |", "|---|---|---|---|---|---|---|---|---|"]
        for tier, m in run["tiers"].items():
            lines.append(f"| {tier} ({m['dim']}-d) | {m['backend']} | {m['one']['p50_ms']:.2f} | {m['one']['p95_ms']:.2f} | "
                         f"{m['one']['p50_ms'] / base['one']['p50_ms']:.2f} | {m['batch']['p50_ms']:.2f} | {m['batch']['per_s']} | "
                         f"{m['batch']['p50_ms'] / base['batch']['p50_ms']:.2f} | {m['graph']['p50_ms']:.2f} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2, help="torch / ONNX Runtime intra-op threads")
    p.add_argument("--utterances", type=int, default=200)
    p.add_argument("--default", type=Path, default=TIERS["minilm"], help="the MiniLM tier's adapter folder")
    p.add_argument("--large", type=Path, default=TIERS["mpnet"], help="the mpnet tier's adapter folder")
    p.add_argument("--results", type=Path, default=RESULTS)
    p.add_argument("--report-only", action="store_true",
                   help="rewrite text_tiers.md from the runs recorded in text_tiers.json and the current model reports, measuring nothing")
    args = p.parse_args()
    path = args.results / "text_tiers.json"
    runs = json.loads(path.read_text()) if path.is_file() else {}  # other devices' runs stay
    if args.report_only:
        (args.results / "text_tiers.md").write_text(report(runs))
        return 0
    torch.set_num_threads(args.threads)
    texts, contexts = dev_inputs(args.utterances)
    tiers = {}
    for tier, folder in {"minilm": args.default, "mpnet": args.large}.items():
        tiers[tier] = measure(te.TextEncoder(adapter=folder, device=args.device), texts, contexts)
        print(tier, json.dumps(tiers[tier]), flush=True)
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.machine()} CPU") + \
        f", torch {torch.__version__}, {args.threads} threads"
    runs[args.device.split(":")[0]] = {"machine": machine, "utterances": len(texts), "tiers": tiers,
                                       "command": f"python bench/text_tiers.py --device {args.device} --threads {args.threads}"}
    args.results.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(runs, indent=2) + "\n")
    (args.results / "text_tiers.md").write_text(report(runs))
    print(report(runs))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
