"""Compare fusion training recipes the honest way: chosen on held-out train text, dev only reported.

    python -m merc.training.fusion_sweep --ema 0 0.99 0.995 0.998 [--seeds 3] [--workers 2]

Each recipe trains ``--seeds`` fusion networks exactly as ``merc train fusion`` does (same data,
pairing, early stopping) but ships nothing. The choice between recipes is made on the mean
held-out-train weighted F1 (text alone: the MELD train dialogues the text adapter never fitted);
MELD dev figures (text, all three modalities under the pairing protocol, lone voice and lone
face) are reported beside it, not used. Writes ``bench/results/fusion_sweep.md`` and ``.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shlex
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

from merc.data import fusion_examples
from merc.evaluation import metrics
from merc.pipeline.labels import LABELS
from merc.training import fusion
from merc.training.artifacts import pm, save_markdown

_data: fusion_examples.Data | None = None


def _init(repository: Path, cache: Path) -> None:
    # Small models: one thread per worker process beats two threads in one.
    global _data
    torch.set_num_threads(1)
    _data = fusion_examples.load_data(repository, cache, log=lambda *a: None)


def _train(job: tuple[float, int]) -> dict:
    ema, seed = job
    cfg = dataclasses.replace(fusion.FusionTrainConfig(), ema=ema)
    t0 = time.time()
    model, info = fusion.train_one(_data, cfg, seed, log=lambda *a: None)
    out = fusion_examples.evaluate_patterns(model, fusion_examples.dev_pairing(_data, cfg.p_clean, cfg.p_present))
    y = _data.dev.emotion
    dev = {k: metrics.weighted_f1(y, out[k]["logits"].argmax(1), len(LABELS)) for k in ("text", "text+audio+vision")}
    lone = {m: v["fusion"] for m, v in fusion.standalone_check(model, _data, cfg).items()}
    return {"ema": ema, **info, "dev": dev, "lone": lone, "seconds": time.time() - t0}


def report(runs: list[dict], command: str, path: Path) -> str:
    decays = sorted({r["ema"] for r in runs})
    by = {d: [r for r in runs if r["ema"] == d] for d in decays}
    chosen = max(decays, key=lambda d: np.mean([r["val_weighted_f1"] for r in by[d]]))
    col = lambda d, f: pm([f(r) for r in by[d]])
    lines = [
        "# Fusion recipes compared: moving average of the weights",
        "",
        f"Command: `{command}`  ",
        f"Chosen by mean held-out-train weighted F1 (MELD train, the 10 % of dialogues held out, text alone): "
        f"**decay {chosen}**. Dev columns are reported, not used. {len(by[chosen])} seeds per recipe.",
        "",
        "| EMA decay per step | held-out-train wF1 | epoch | dev text wF1 | dev text+audio+vision wF1* | lone voice* | lone face* |",
        "|---|---|---|---|---|---|---|",
        *[f"| {d if d else 'off'} | {col(d, lambda r: r['val_weighted_f1'])} | {', '.join(str(r['epoch']) for r in by[d])} | "
          f"{col(d, lambda r: r['dev']['text'])} | {col(d, lambda r: r['dev']['text+audio+vision'])} | "
          f"{col(d, lambda r: r['lone']['audio'])} | {col(d, lambda r: r['lone']['vision'])} |" for d in decays],
        "",
        "\\* Voice and face paired by label under the protocol (fusion.md); lone voice: RAVDESS actors 19-20,",
        "lone face: FER2013 publictest half B, one utterance per conversation.",
        "",
    ]
    return save_markdown(path, lines)


def main(argv: list[str] | None = None) -> int:
    from merc.data.meld import repo_root

    p = argparse.ArgumentParser(prog="python -m merc.training.fusion_sweep", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ema", type=float, nargs="+", required=True, help="decays to compare (0: no averaging)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--workers", type=int, default=2, help="processes, one torch thread each")
    p.add_argument("--results", type=Path, help="report folder (default bench/results)")
    args = p.parse_args(argv)
    root = repo_root()
    results = args.results or root / "bench" / "results"
    command = "python -m merc.training.fusion_sweep " + shlex.join(sys.argv[1:] if argv is None else argv)
    jobs = [(d, s) for d in args.ema for s in range(args.seeds)]
    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(root / "model_repository", root / ".cache")) as pool:
        runs = []
        for r in pool.map(_train, jobs):
            print(f"  ema {r['ema']} seed {r['seed']}: held-out {r['val_weighted_f1']:.4f} (epoch {r['epoch']}), "
                  f"dev text {r['dev']['text']:.4f} ({r['seconds']:.0f} s)", flush=True)
            runs.append(r)
    (results / "fusion_sweep.json").write_text(json.dumps({"command": command, "runs": runs}, indent=2, default=float) + "\n")
    print(report(runs, command, results / "fusion_sweep.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
