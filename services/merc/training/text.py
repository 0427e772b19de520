"""Adapt a sentence encoder to emotion in conversation: LoRA adapters trained on MELD.

    merc train text [--base minilm|mpnet] [--seeds 3] [--epochs 5] [--device cuda]
    merc train text --soup RUN RUN RUN        # ship the soup of earlier runs' adapters

Each utterance is read with the conversation just before it as a second segment: the last three
utterances, most recent first, marked as the same or another speaker (merc.pipeline.text_context; causal:
never a later one). The pooled utterance vector feeds a linear emotion head (+ an auxiliary
sentiment head) during training. What ships is the adapters only (``adapter.safetensors``)
next to the Triton text_encoder; the base weights come from the package.

Protocol: gradient steps on MELD train minus 10 % of its dialogues; those held-out dialogues pick
each seed's epoch; the uniform soup of the seeds' adapters ships; MELD dev is only measured. The
shipped adapter's embeddings are what the fusion/context model (``merc train fusion``) trains on.

The report and model card are laid out in merc.training.text_report.
"""

from __future__ import annotations

import copy
import json
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from merc import progress
from merc.data.meld import Dialogue, holdout_split, load_split
from merc.evaluation import metrics
from merc.models import text_encoder as te
from merc.models import tiers
from merc.models.layers import DictConfig
from merc.models.lora import LoRAConfig, adapter_state, add_lora, soup
from merc.pipeline import text_context
from merc.pipeline.labels import LABELS, SENTIMENTS
from merc.runtime.config import settings
from merc.training import text_report
from merc.training.artifacts import command_line, sha256, stamp

VALIDATION_FRACTION = 0.10
VALIDATION_SEED = 0  # the same held-out train dialogues as the fusion trainer


@dataclass
class TextTrainConfig(DictConfig):
    epochs: int = 5  # the best held-out epoch was 2-3 in every run; the decay needs the rest
    batch_size: int = 32
    base: str = "minilm"  # merc.models.text_encoder.BASES: the tier
    lr: float = 1e-3  # adapters and heads; the base stays frozen
    warmup: float = 0.06  # fraction of steps
    weight_decay: float = 0.01
    max_length: int = 160  # utterance + three earlier ones; longer inputs lose the oldest context words
    # How much of the conversation the encoder reads before each utterance (merc.pipeline.text_context).
    context_turns: int = text_context.TURNS
    context_speakers: bool = text_context.SPEAKERS
    class_weight_power: float = 0.3  # as for the context model: (1/frequency)^power
    sentiment_weight: float = 0.5
    lora: LoRAConfig = field(default_factory=LoRAConfig)


@dataclass
class Examples:
    texts: list[str]
    contexts: list[str]
    emotion: torch.Tensor
    sentiment: torch.Tensor


def examples(dialogues: list[Dialogue], turns: int = text_context.TURNS, speakers: bool = text_context.SPEAKERS) -> Examples:
    """Each utterance and its context as serving hands them to the model (then normalised, as the model does)."""
    limit = settings().max_text_chars
    texts, contexts, emo, sent = [], [], [], []
    for d in dialogues:
        said = text_context.dialogue_contexts([(u.speaker, u.text) for u in d.utterances], turns, speakers)
        for u, context in zip(d.utterances, said, strict=True):
            text, context = text_context.encoder_inputs(u.text, context, limit)
            texts.append(te.normalise_text(text))
            contexts.append(context)
            emo.append(u.emotion)
            sent.append(u.sentiment)
    return Examples(texts, contexts, torch.tensor(emo), torch.tensor(sent))


class AdaptedEncoder(nn.Module):
    """A base transformer with LoRA adapters, pooled exactly as served, plus training-only heads."""

    def __init__(self, encoder: nn.Module, cfg: TextTrainConfig):
        super().__init__()
        self.base = te.BASES[cfg.base]
        self.encoder = encoder
        add_lora(self.encoder, cfg.lora)
        dim = self.base.dim
        self.head = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(0.1), nn.Linear(dim, len(LABELS)))
        self.sentiment = nn.Sequential(nn.LayerNorm(dim), nn.Dropout(0.1), nn.Linear(dim, len(SENTIMENTS)))

    def forward(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        v = te.pool(self.encoder(**te.model_inputs(batch, self.base)).last_hidden_state, batch)
        return self.head(v), self.sentiment(v)


def _batches(tokenizer, ex: Examples, idx: np.ndarray, size: int, max_length: int, device: torch.device):
    for s in range(0, len(idx), size):
        b = idx[s : s + size]
        yield b, te.tokenize(tokenizer, [ex.texts[i] for i in b], [ex.contexts[i] for i in b], max_length).to(device)


@torch.no_grad()
def predict(model: AdaptedEncoder, tokenizer, ex: Examples, cfg: TextTrainConfig) -> np.ndarray:
    model.eval()
    # Length-sorted batches: padding is most of the cost of evaluation otherwise.
    order = np.argsort([len(t) + len(c) for t, c in zip(ex.texts, ex.contexts, strict=True)], kind="stable")
    out = np.zeros((len(ex.texts), len(LABELS)))
    for b, batch in _batches(tokenizer, ex, order, 128, cfg.max_length, _device(model)):
        with _autocast(model):
            out[b] = model(batch)[0].double().cpu().numpy()
    return out


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _autocast(model: nn.Module):
    """bfloat16 matrix products on a GPU (the adapters and heads stay float32); exact float32 on a CPU."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=_device(model).type == "cuda")


def train_one(fit: Examples, val: Examples, cfg: TextTrainConfig, seed: int, log=print,
              device: str = "cpu") -> tuple[AdaptedEncoder, object, dict]:
    """Returns (the model at its best epoch, the tokenizer, info)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tokenizer, encoder = te.load_base(te.BASES[cfg.base])
    model = AdaptedEncoder(encoder, cfg).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * -(-len(fit.texts) // cfg.batch_size)
    warm = max(1, int(cfg.warmup * steps))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / (steps - warm))))
    freq = torch.bincount(fit.emotion, minlength=len(LABELS)).float() / len(fit.emotion)
    weight = freq.clamp(min=1e-6) ** -cfg.class_weight_power
    weight = (weight / (weight * freq).sum()).to(device)
    fit_emotion, fit_sentiment = fit.emotion.to(device), fit.sentiment.to(device)

    best, best_f1, best_epoch = None, -1.0, 0
    t0 = time.time()
    for epoch in progress.steps(range(1, cfg.epochs + 1), "text adapter: epochs"):
        model.train()
        order = rng.permutation(len(fit.texts))
        for i, (b, batch) in enumerate(_batches(tokenizer, fit, order, cfg.batch_size, cfg.max_length, _device(model))):
            with _autocast(model):
                logits, sent = model(batch)
            logits, sent = logits.float(), sent.float()  # the loss in float32, as its class weights
            loss = F.cross_entropy(logits, fit_emotion[b], weight=weight) + cfg.sentiment_weight * F.cross_entropy(
                sent, fit_sentiment[b])
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


def save_adapter(out: Path, model: AdaptedEncoder, cfg: TextTrainConfig, lora: LoRAConfig, info: dict) -> str:
    """adapter.safetensors + config.json (LoRA fields, version) + SHA256SUMS; the Triton config names the version."""
    out.mkdir(parents=True, exist_ok=True)
    # Half precision: rounding the factors (1e-3 relative) moves the embeddings far less than training did, and
    # it halves what the repository carries (mpnet's 3-seed soup is rank 24 on 72 layers).
    save_file({k: v.cpu().half() for k, v in adapter_state(model.encoder).items()}, str(out / "adapter.safetensors"))
    version = f"{model.base.version}+meld-lora-{sha256(out / 'adapter.safetensors')[:12]}"
    meta = {**lora.to_dict(), "version": version, "context_turns": cfg.context_turns,
            "context_speakers": cfg.context_speakers, "base": model.base.version, "train_max_length": cfg.max_length,
            "trained": info}
    (out / "config.json").write_text(json.dumps(meta, indent=2) + "\n")
    names = ("adapter.safetensors", "config.json")
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / n)}  {n}\n" for n in names))
    stamp(out, version)
    return version


def _trained(model: AdaptedEncoder) -> dict[str, torch.Tensor]:
    """What training changed (adapters and heads): all a seed's process hands back."""
    return {k: v.cpu() for k, v in model.state_dict().items() if ".lora_" in k or k.startswith(("head.", "sentiment."))}


def _seed_job(job: tuple) -> tuple[dict[str, torch.Tensor], dict]:
    fit, val, cfg, seed, device, threads = job
    torch.set_num_threads(threads)
    model, _, info = train_one(fit, val, cfg, seed, print, device)
    return _trained(model), info


def _train_seeds(fit: Examples, val: Examples, cfg: TextTrainConfig, seeds: range, device: str, jobs: int, log):
    """(model, tokenizer, info) per seed; ``jobs`` > 1 trains that many at once, each in its own process."""
    if jobs <= 1:
        return [train_one(fit, val, cfg, seed, log, device) for seed in seeds]
    # A GPU is mostly idle with one small-batch adapter run. spawn: CUDA cannot be used in a forked child.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        done = list(pool.map(_seed_job, [(fit, val, cfg, s, device, torch.get_num_threads()) for s in seeds]))
    out = []
    for state, info in done:
        tokenizer, encoder = te.load_base(te.BASES[cfg.base])
        model = AdaptedEncoder(encoder, cfg)
        model.load_state_dict(state, strict=False)
        out.append((model.to(device), tokenizer, info))
    return out


def train(cfg: TextTrainConfig, seeds: int, out: Path, log=print, device: str = "cpu", first_seed: int = 0,
          jobs: int = 1) -> dict:
    """Train ``seeds`` adapters and ship their soup (one seed: that seed); return the report dict."""
    fit_d, val_d = holdout_split(load_split("train"), VALIDATION_FRACTION, VALIDATION_SEED)
    fit, val, dev = (examples(d, cfg.context_turns, cfg.context_speakers)
                     for d in (fit_d, val_d, load_split("dev")))
    log(f"MELD: {len(fit.texts)} train / {len(val.texts)} held-out train / {len(dev.texts)} dev utterances")
    per_seed, models = [], []
    for model, tokenizer, info in _train_seeds(fit, val, cfg, range(first_seed, first_seed + seeds), device, jobs, log):
        seed = info["seed"]
        info["dev"] = metrics.summary(dev.emotion.numpy(), predict(model, tokenizer, dev, cfg).argmax(1), len(LABELS))
        log(f"  seed {seed}: dev weighted F1 {info['dev']['weighted_f1']:.4f} (text alone)")
        per_seed.append(info)
        models.append(model)
    result = {"per_seed": per_seed, "config": cfg.to_dict(),
              "splits": {"fit": len(fit.texts), "val": len(val.texts), "dev": len(dev.texts)}}
    shipped, lora, trained = models[0], cfg.lora, {k: per_seed[0][k] for k in ("seed", "epoch", "val_weighted_f1")}
    if seeds > 1:
        # The soup ships whatever the held-out comparison says: each seed's held-out score is the
        # maximum over its epochs on those very dialogues (biased upwards), the soup's is not.
        shipped, lora = seed_soup(models, cfg)
        f1 = metrics.weighted_f1(val.emotion.numpy(), predict(shipped, tokenizer, val, cfg).argmax(1), len(LABELS))
        result["soup"] = {"val_weighted_f1": f1, "dev": metrics.summary(
            dev.emotion.numpy(), predict(shipped, tokenizer, dev, cfg).argmax(1), len(LABELS))}
        log(f"  soup of {seeds} seeds: held-out-train weighted F1 {f1:.4f}, dev {result['soup']['dev']['weighted_f1']:.4f}")
        trained = {"soup_of_seeds": [s["seed"] for s in per_seed], "val_weighted_f1": f1}
    result["version"] = save_adapter(out, shipped, cfg, lora, trained)
    return result


def seed_soup(models: list[AdaptedEncoder], cfg: TextTrainConfig) -> tuple[AdaptedEncoder, LoRAConfig]:
    """The seeds' adapters averaged (merc.models.lora.soup) with their heads averaged, as one model."""
    state, lora = soup([adapter_state(m.encoder) for m in models], cfg.lora)
    _, encoder = te.load_base(te.BASES[cfg.base])
    model = AdaptedEncoder(encoder, TextTrainConfig(**{**vars(cfg), "lora": lora})).to(_device(models[0]))
    heads = {k: torch.stack([m.state_dict()[k] for m in models]).mean(0)
             for k in models[0].state_dict() if k.startswith(("head.", "sentiment."))}
    model.load_state_dict({**{f"encoder.{k}": v for k, v in state.items()}, **heads}, strict=False)
    return model.eval(), lora


def soup_runs(runs: list[Path], out: Path) -> dict:
    """One adapter from the shipped adapters of several runs of one recipe (``--soup``).

    Each run folder is what ``merc train text --out RUN/1 --results RUN`` leaves: ``1/`` (adapter) and
    ``text_adapter.json``. Training heads are not shipped, so the soup is measured downstream
    (``merc train fusion``, text only).
    """
    metas = [json.loads((r / "1" / "config.json").read_text()) for r in runs]
    recipe = lambda m: {k: m.get(k) for k in ("base", "context_turns", "context_speakers", "train_max_length", "targets")}
    if any(recipe(m) != recipe(metas[0]) for m in metas):
        raise ValueError("--soup needs runs of one recipe (context, length and adapted layers alike)")
    lora = LoRAConfig.from_dict(metas[0])
    state, lora = soup([load_file(str(r / "1" / "adapter.safetensors")) for r in runs], lora)
    base = te.adapter_base(metas[0], runs[0])
    cfg = TextTrainConfig(base=base.key, context_turns=metas[0]["context_turns"], context_speakers=metas[0]["context_speakers"],
                          max_length=metas[0]["train_max_length"], lora=lora)
    model = AdaptedEncoder(te.load_base(base)[1], cfg)
    model.load_state_dict({f"encoder.{k}": v for k, v in state.items()}, strict=False)
    trained = {"soup_of": [{"run": r.name, **m["trained"]} for r, m in zip(runs, metas, strict=True)]}
    return {"version": save_adapter(out, model, cfg, lora, trained), "runs": [r.name for r in runs],
            "config": cfg.to_dict(), "splits": json.loads((runs[0] / "text_adapter.json").read_text())["splits"]}


def main(argv: list[str] | None = None) -> int:
    import argparse
    import platform

    from merc.data.meld import repo_root

    root = repo_root()
    p = argparse.ArgumentParser(prog="merc train text", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", choices=sorted(te.BASES), default=TextTrainConfig.base,
                   help="the tier: minilm (CPU default) or mpnet (larger, for GPU deployments)")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=TextTrainConfig.epochs)
    p.add_argument("--out", type=Path, help="the adapter folder (default: the tier's, merc.models.tiers.folder)")
    p.add_argument("--results", type=Path, help="report folder (default bench/results, or bench/results/TIER for another tier)")
    p.add_argument("--first-seed", type=int, default=0)
    p.add_argument("--lr", type=float, default=TextTrainConfig.lr)
    p.add_argument("--rank", type=int, default=LoRAConfig.rank, help="LoRA rank (alpha = 2 x rank)")
    p.add_argument("--context-turns", type=int, default=TextTrainConfig.context_turns,
                   help="earlier utterances read with each one (serving reads merc.pipeline.text_context.TURNS)")
    p.add_argument("--no-context-speakers", dest="context_speakers", action="store_false",
                   default=TextTrainConfig.context_speakers, help="do not mark earlier utterances as same/other speaker")
    p.add_argument("--max-length", type=int, default=TextTrainConfig.max_length)
    p.add_argument("--class-weight-power", type=float, default=TextTrainConfig.class_weight_power)
    p.add_argument("--device", default="cpu", help="torch device for training (the shipped adapter runs on CPU)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, each in its own process")
    p.add_argument("--soup", type=Path, nargs="+", metavar="RUN",
                   help="instead of training: ship the soup of these runs' adapters (folders left by --out RUN/1 --results RUN)")
    p.add_argument("--compare", type=Path, nargs="*", default=[], metavar="RUN",
                   help="with --soup: further runs (folders with text_adapter.json) for the report's table")
    args = p.parse_args(argv)
    # Each tier trains into its own folders: an mpnet adapter in the default's place would not fit its fusion.
    args.out = args.out or tiers.folder(root / "model_repository" / "text_encoder" / "1", args.base)
    args.results = args.results or tiers.results(root / "bench" / "results", args.base)
    torch.set_num_threads(args.threads)
    torch.backends.cuda.matmul.allow_tf32 = False  # the same float32 arithmetic as on CPU
    t0 = time.time()
    if args.soup:
        r = soup_runs(args.soup, args.out)
    else:
        cfg = TextTrainConfig(base=args.base, epochs=args.epochs, lr=args.lr, context_turns=args.context_turns,
                              context_speakers=args.context_speakers, max_length=args.max_length,
                              class_weight_power=args.class_weight_power,
                              lora=LoRAConfig(rank=args.rank, alpha=2.0 * args.rank, targets=te.BASES[args.base].lora_targets))
        r = train(cfg, args.seeds, args.out, device=args.device, first_seed=args.first_seed, jobs=args.jobs)
    r.update(command=command_line("merc train text", argv), wall_s=time.time() - t0,
             out=os.path.relpath(args.out, root),
             machine=(torch.cuda.get_device_name() if args.device.startswith("cuda")
                      else f"{platform.machine()} CPU") + f", torch {torch.__version__} ({args.threads} CPU threads)")
    args.results.mkdir(parents=True, exist_ok=True)
    (args.results / "text_adapter.json").write_text(json.dumps(r, indent=2) + "\n")
    (args.out / "MODEL_CARD.md").write_text(text_report.model_card(r, args.seeds, args.soup, args.out))
    print(text_report.report(r, args.results / "text_adapter.md", [*(args.soup or ()), *args.compare]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
