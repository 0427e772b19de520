"""Train the fusion network (gate over text/voice/face experts + causal dialogue context) and ship it.

    merc train fusion [--seeds 3]

Protocol (honest by construction):
- text: the shipped text encoder (MiniLM + MELD adapter, ``merc train text``) on real MELD
  dialogues, each utterance read with the conversation before it (merc.pipeline.text_context);
- voice and face: the shipped audio/face encoders' embeddings of items they never trained on
  (RAVDESS actors 17-20, FER2013 publictest), paired with MELD utterances by label
  (merc.data.pairing): actors 17-18 and one half of publictest for training, actors 19-20
  and the other half for development, so no clip or face is on both sides;
- modality dropout and corruption (noise, clipping, blur, occlusion, darkness) in training;
- 10 % of the MELD train dialogues are held out for early stopping and for choosing the seed
  to ship, on their text alone (their voices and faces could only come from the training pools);
  MELD dev is never used for either; what they score, and what ships, is the moving average of
  the weights (``FusionTrainConfig.ema``; ``python -m merc.training.fusion_sweep`` compares decays);
- how many epochs at most is chosen first on voices and faces the fusion has not seen: trained on
  one fit actor and half the fit faces, early-stopped on those dialogues paired with the other
  actor and faces, both ways (``choose_epochs``); text alone would let a text tier that keeps
  improving train on while the voice and face paths memorise their small pools;
- temperature and conformal threshold are fitted on dev per availability pattern; the dev
  figures for them are cross-fitted (fit on half the dev dialogues, measure on the other).

The examples are built in merc.data.fusion_examples (shared with `merc eval`); the report, figures
and model card are laid out in merc.training.fusion_report.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from merc import progress
from merc.data import pairing
from merc.data.fusion_examples import (
    DEV_HALVINGS,
    DEV_PAIRING_SEED,
    P_CLEAN,
    P_PRESENT,
    POOL_FOLDS,
    Data,
    Paired,
    dev_halves,
    dev_pairing,
    evaluate_patterns,
    fit_experts_on_patterns,
    fit_text_shift,
    load_data,
    load_recorded,
    predict,
    run,
    standalone,
)
from merc.evaluation import metrics
from merc.media import quality
from merc.models import text_encoder, tiers
from merc.models.context_model import ContextConfig, ContextModel
from merc.models.layers import DictConfig
from merc.pipeline import calibration as cal
from merc.pipeline import text_shift
from merc.pipeline.labels import LABELS, MODALITIES, SENTIMENTS
from merc.training import fusion_report
from merc.training.artifacts import command_line, sha256, stamp


@dataclass
class FusionTrainConfig(DictConfig):
    epochs: int = 40  # upper bound; early stopping on the held-out train dialogues decides
    patience: int = 8
    dialogues_per_batch: int = 8
    lr: float = 1e-3
    weight_decay: float = 0.01
    sentiment_weight: float = 0.5
    text_expert_weight: float = 0.3  # the text expert's own head: its posterior feeds the incongruence score
    class_weight_power: float = 0.3
    p_present: tuple[float, float, float] = P_PRESENT  # modality dropout: text, audio, vision
    p_clean: float = P_CLEAN  # otherwise a random corruption variant
    # Voice-only and face-only single-utterance conversations drawn from the pools with their own label
    # distribution, as a fraction of the MELD utterances: without them the fusion would impose MELD's
    # class prior (47 % neutral) on a lone voice clip or face.
    standalone: float = 0.1
    # Exponential moving average of the weights after every step (decay per step; 0 = off), started at
    # the initialisation: the average is what early stopping scores and what ships. The text embeddings
    # of training dialogues are ones the adapter has fitted, so the last step's weights chase them; the
    # average generalises better (held-out-train text 0.620 vs 0.615, 3 seeds; fusion_sweep.md). At the
    # usual stopping epoch (2-3, ~230 steps each) 3-10 % of it is still the initialisation, a shrinkage
    # that helped: a warm-up that follows the weights early (decay min(ema, t/(t+9))) scored 0.619.
    ema: float = 0.995
    # How many epochs is chosen on voices and faces the fusion has not seen (choose_epochs); without it,
    # the held-out dialogues' text alone decides, and a text tier whose text keeps improving for many
    # epochs lets the voice and face experts memorise their pools meanwhile.
    pool_folds: bool = True
    # The experts' residual keeps a lone voice clip or face near its encoder's answer (fusion.md).
    model: ContextConfig = field(default_factory=lambda: ContextConfig(expert_residual=True))


# ---------------------------------------------------------------------------- training


def choose_epochs(data: Data, cfg: FusionTrainConfig, seed: int, log=print) -> list[int]:
    """The best epoch of each fold of the training pools: trained on one fold's voices and faces,
    early-stopped on the held-out dialogues paired with the other's, with every pattern of traffic.

    Under the pairing protocol the held-out dialogues could otherwise only borrow voices and faces the
    fusion trains on (train_one), and those can say nothing of memorising them."""
    return [train_one(data, cfg, seed, lambda *a: None, pools=(fold, other))[1]["epoch"]
            for fold, other in zip(POOL_FOLDS, POOL_FOLDS[::-1], strict=True)]


def train_one(data: Data, cfg: FusionTrainConfig, seed: int, log=print,
              pools: tuple[str, str] = ("fit", "fit")) -> tuple[ContextModel, dict]:
    """One seed, early-stopped on the held-out train dialogues. ``pools``: the voices and faces that
    training and early stopping borrow ("fit", or POOL_FOLDS); with the fit pools for both, under the
    pairing protocol, the held-out dialogues' text alone decides, and ``cfg.pool_folds`` first bounds
    the epochs by choose_epochs."""
    folds = None
    if cfg.pool_folds and data.recorded is None and pools == ("fit", "fit"):
        folds = choose_epochs(data, cfg, seed, log)
        cfg = replace(cfg, epochs=max(1, round(float(np.mean(folds)))))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = ContextModel(cfg.model)
    model.fusion.audio.load_head(data.audio_head)
    model.fusion.vision.load_head(data.vision_head)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=cfg.weight_decay)
    freq = np.bincount(data.fit.emotion, minlength=len(LABELS)) / len(data.fit.emotion)
    weight = torch.tensor(np.clip(freq, 1e-6, None) ** -cfg.class_weight_power, dtype=torch.float32)
    weight = weight / (weight * torch.tensor(freq, dtype=torch.float32)).sum()
    # Early stopping sees a fixed pairing with random patterns, like the traffic it will serve; but
    # under the pairing protocol the held-out dialogues can only borrow voices and faces from the
    # training pools, and scoring those would reward memorising them (seeds picked that way trained
    # twice as long and did worse on dev's unseen clips): there, the held-out dialogues' text decides.
    val = data.draw("val", np.random.default_rng(10_000 + seed), cfg, pools[1])
    if data.recorded is None and pools[0] == pools[1]:
        val = val.with_mask(pairing.pattern_mask(len(val.mask), ("text",)))

    average = copy.deepcopy(model) if cfg.ema > 0 else model
    best, best_f1, best_epoch, stale = None, -1.0, 0, 0
    for epoch in progress.steps(range(1, cfg.epochs + 1), "fusion: epochs (early stopping may end sooner)"):
        model.train()
        fit = data.draw("fit", rng, cfg, pools[0])  # redrawn every epoch
        n = len(fit.split.lengths)
        order = rng.permutation(n)
        # At most about an epoch of memory, so a small manifest's few steps per epoch do not leave the
        # average at the initialisation (on MELD, ~230 steps an epoch, cfg.ema itself applies).
        decay = min(cfg.ema, 1.0 - cfg.dialogues_per_batch / max(n, cfg.dialogues_per_batch))
        for start in range(0, n, cfg.dialogues_per_batch):
            out, rows = run(model, fit, order[start : start + cfg.dialogues_per_batch])
            y = torch.from_numpy(fit.split.emotion[rows])
            has_text = torch.from_numpy(fit.mask[rows, 0] > 0.5)
            loss = F.cross_entropy(out["logits"], y, weight=weight)
            sentiment = torch.from_numpy(fit.split.sentiment[rows])
            if (sentiment >= 0).any():  # a user's manifest has emotion labels only (-1 here)
                loss = loss + cfg.sentiment_weight * F.cross_entropy(out["sentiment_logits"], sentiment, ignore_index=-1)
            if has_text.any():
                loss = loss + cfg.text_expert_weight * F.cross_entropy(out["expert_logits"][has_text, 0], y[has_text], weight=weight)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if average is not model:
                with torch.no_grad():
                    for a, p in zip(average.parameters(), model.parameters(), strict=True):
                        a.lerp_(p, 1.0 - decay)
        f1 = metrics.weighted_f1(data.val.emotion, predict(average, val)["logits"].argmax(1), len(LABELS))
        if f1 > best_f1:
            best, best_f1, best_epoch, stale = copy.deepcopy(average.state_dict()), f1, epoch, 0
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best)
    model.eval()
    bound = "" if folds is None else f" of at most {cfg.epochs} (the pool folds' best: {', '.join(map(str, folds))})"
    log(f"  seed {seed}: best held-out-train weighted F1 {best_f1:.4f} at epoch {best_epoch}{bound} (stopped at {epoch})")
    info = {"seed": seed, "val_weighted_f1": best_f1, "epoch": best_epoch}
    return model, info if folds is None else {**info, "fold_epochs": folds}


# ---------------------------------------------------------------------------- evaluation


def crossfit(logits: dict[str, np.ndarray], labels: np.ndarray, lengths: list[int], coverage: float) -> dict[str, dict]:
    """Per pattern: calibration before, and after per-pattern temperature + conformal threshold, cross-fitted.

    For each random halving of the dev dialogues, each half is scaled (and its sets built) with what
    was fitted on the other half; the metrics are taken over all of dev at once, so no example is
    calibrated with its own label and ECE is not inflated by scoring half-size samples.
    """
    report = {}
    for key, z in logits.items():
        before = cal.softmax(z)
        folds = []
        for r in range(DEV_HALVINGS):
            p, in_set, size, temps = np.zeros_like(z), np.zeros(len(labels), bool), np.zeros(len(labels)), []
            halves = dev_halves(lengths, r)
            for a, b in (halves, halves[::-1]):
                t = cal.fit_temperature(z[a], labels[a])
                q = cal.conformal_threshold(cal.softmax(z[a], t), labels[a], coverage)
                p[b] = cal.softmax(z[b], t)
                sets = 1.0 - p[b] <= q
                sets[np.arange(len(b)), p[b].argmax(1)] = True  # as served: a set is never empty
                in_set[b] = sets[np.arange(len(b)), labels[b]]
                size[b] = sets.sum(1)
                temps.append(t)
            folds.append({"temperature": float(np.mean(temps)), "ece": cal.ece(p, labels),
                          "ece_floor": cal.ece_floor(p, draws=50, seed=r), "nll": cal.nll(p, labels),
                          "brier": cal.brier(p, labels), "coverage": float(in_set.mean()), "set_size": float(size.mean())})
        report[key] = {
            "before": {"ece": cal.ece(before, labels), "nll": cal.nll(before, labels), "brier": cal.brier(before, labels)},
            "after": {k: float(np.mean([f[k] for f in folds])) for k in folds[0]},
        }
    return report


def standalone_check(model: ContextModel, data: Data, cfg: FusionTrainConfig) -> dict[str, dict]:
    """Voice alone and face alone on their own held-out corpus, one utterance per conversation:
    the encoder's own head against the same embedding through the fusion (gate, context, calibration)."""
    out = {}
    for m, corpus in (("audio", "RAVDESS actors 19-20"), ("vision", "FER2013 publictest half B")):
        paired = standalone(data.pools[f"{m}_dev"], m, 0, None, cfg)
        p = predict(model, paired)
        y = paired.split.emotion
        j = MODALITIES.index(m)
        out[m] = {"corpus": corpus, "n": int(len(y)),
                  "encoder": metrics.weighted_f1(y, p["expert_logits"][:, j].argmax(1), len(LABELS)),
                  "fusion": metrics.weighted_f1(y, p["logits"].argmax(1), len(LABELS))}
    return out


def corruption_table(model: ContextModel, data: Data, cfg: FusionTrainConfig) -> dict[str, list]:
    """The gate at work: text + one other modality on dev, that modality in each corruption variant.
    Rows: (variant, mean weight of that modality, weighted F1)."""
    base = dev_pairing(data, cfg.p_clean, cfg.p_present)
    out = {}
    for m in ("audio", "vision"):
        pool, j = data.pools[f"{m}_dev"], MODALITIES.index(m)
        rows = []
        for v, name in enumerate(pool.variants):
            emb, q = pool.draw(data.dev.emotion, np.random.default_rng(DEV_PAIRING_SEED), 1.0, variant=v)
            fields = {"audio": base.audio, "vision": base.vision, "audio_quality": base.audio_quality, "vision_quality": base.vision_quality}
            fields[m], fields[f"{m}_quality"] = emb, q
            paired = Paired(base.split, mask=pairing.pattern_mask(len(emb), ("text", m)), **fields)
            p = predict(model, paired)
            rows.append((name, float(p["weights"][:, j].mean()), metrics.weighted_f1(data.dev.emotion, p["logits"].argmax(1), len(LABELS))))
        out[m] = rows
    return out


# ---------------------------------------------------------------------------- artifacts


def save(out: Path, model: ContextModel, calibration: dict, info: dict, encoders: dict, card: str,
         shift: text_shift.TextShift | None = None) -> str:
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "weights.safetensors"))
    version = f"fusion-{sha256(out / 'weights.safetensors')[:12]}"
    config = {**model.cfg.to_dict(), "version": version, "labels": list(LABELS), "sentiments": list(SENTIMENTS),
              "modalities": list(MODALITIES), "quality": list(quality.FIELDS), "encoders": encoders, "trained": info}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "calibration.json").write_text(json.dumps(calibration, indent=2) + "\n")
    (out / "MODEL_CARD.md").write_text(card.replace("{version}", version))
    names = ["weights.safetensors", "config.json", "calibration.json", "MODEL_CARD.md"]
    (out / text_shift.FILE).unlink(missing_ok=True)  # one fitted for other text would misjudge this model's
    if shift is not None:
        shift.save(out / text_shift.FILE)
        names.append(text_shift.FILE)
    (out / "SHA256SUMS").write_text("".join(f"{sha256(out / n)}  {n}\n" for n in names))
    stamp(out, version)
    return version


def main(argv: list[str] | None = None) -> int:
    import argparse
    import os
    import platform

    from merc.data.meld import repo_root

    p = argparse.ArgumentParser(prog="merc train fusion", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=FusionTrainConfig.epochs)
    p.add_argument("--coverage", type=float, default=cal.DEFAULT_COVERAGE, help="conformal prediction-set coverage")
    p.add_argument("--repository", type=Path, help="model repository to read encoders from and write fusion/1 to")
    p.add_argument("--results", type=Path, help="report folder (default bench/results, or bench/results/TIER for --tier)")
    p.add_argument("--tier", choices=tiers.TIERS, default=tiers.DEFAULT,
                   help="the text tier (merc.models.tiers) whose encoder it reads and whose fusion it writes")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--standalone", type=float, default=FusionTrainConfig.standalone,
                   help="share of one-utterance voice-only and face-only conversations in training (their own label prior)")
    p.add_argument("--ema", type=float, default=FusionTrainConfig.ema,
                   help="decay of the weights' moving average that is scored and shipped (0: the last step's weights)")
    p.add_argument("--no-pool-folds", dest="pool_folds", action="store_false",
                   help="let the held-out dialogues' text alone decide how long to train (no epochs chosen on unseen voices and faces)")
    p.add_argument("--no-expert-residual", dest="expert_residual", action="store_false",
                   help="emotion logits from the context head alone, without the gated experts' log-posteriors added")
    p.add_argument("--manifest", type=Path, help="train on your own paired data: a conversation manifest with `label` on every line")
    p.add_argument("--dev-manifest", type=Path, help="with --manifest: the development manifest (calibration and figures)")
    args = p.parse_args(argv)
    if (args.manifest is None) != (args.dev_manifest is None):
        p.error("--manifest and --dev-manifest go together")
    torch.set_num_threads(args.threads)
    seeds, epochs, coverage, log = args.seeds, args.epochs, args.coverage, print
    command = command_line("merc train fusion", argv)
    root = repo_root()
    repository = args.repository or root / "model_repository"
    cache = root / ".cache"
    results = args.results or tiers.results(root / "bench" / "results", args.tier)
    t0 = time.time()
    cfg = FusionTrainConfig(epochs=epochs, standalone=args.standalone, ema=args.ema, pool_folds=args.pool_folds,
                            model=ContextConfig(expert_residual=args.expert_residual))
    if args.manifest is not None:
        return train_recorded(load_recorded(repository, args.manifest, args.dev_manifest, log), cfg,
                              seeds, coverage, repository, results, command, log)
    data = load_data(repository, cache, log, args.tier)
    cfg.model.text_dim = data.fit.text.shape[1]  # the tier's embedding size
    dev = dev_pairing(data, cfg.p_clean, cfg.p_present)
    y = data.dev.emotion
    per_seed, models = [], []
    for seed in range(seeds):
        model, info = train_one(data, cfg, seed, log)
        out = evaluate_patterns(model, dev)
        info["patterns"] = {k: metrics.summary(y, v["logits"].argmax(1), len(LABELS)) for k, v in out.items()}
        info["calibration"] = crossfit({k: v["logits"] for k, v in out.items()}, y, data.dev.lengths, coverage)
        info["standalone"] = standalone_check(model, data, cfg)
        log(f"  seed {seed}: dev weighted F1 " + ", ".join(f"{k} {v['weighted_f1']:.4f}" for k, v in info["patterns"].items()))
        per_seed.append(info)
        models.append((model, out))
    ship = int(np.argmax([s["val_weighted_f1"] for s in per_seed]))
    model, out = models[ship]
    keys = list(out)
    calibration = cal.fit_patterns(np.concatenate([out[k]["logits"] for k in keys]), np.tile(y, len(keys)),
                                   [k for k in keys for _ in y], coverage)
    calibration["experts"] = fit_experts_on_patterns(out, y)
    calibration["fitted_on"] = "MELD dev with paired RAVDESS actors 19-20 / FER2013 publictest half B, per pattern"
    text_base = text_encoder.base_of(data.encoders["text_encoder"]).name
    card = fusion_report.model_card(cfg, per_seed, coverage, text_base)
    out_dir = tiers.folder(repository / "fusion" / "1", args.tier)
    version = save(out_dir, model, calibration,
                   {"seed": per_seed[ship]["seed"], "epoch": per_seed[ship]["epoch"],
                    "report": (tiers.results(Path("bench/results"), args.tier) / "fusion.md").as_posix()}, data.encoders, card,
                   fit_text_shift(data))
    fusion_report.write_figures(results / "figures", out, y, data.dev.lengths)
    r = {"command": command, "wall_s": time.time() - t0, "machine": f"{platform.machine()} CPU, torch {torch.__version__}",
         "out": os.path.relpath(out_dir, root), "version": version, "shipped_seed": ship, "encoders": data.encoders,
         "sizes": {"fit": len(data.fit.emotion), "val": len(data.val.emotion), "dev": len(y)},
         "per_seed": per_seed, "coverage": coverage, "train_config": cfg.to_dict(),
         "weights": {k: out[k]["weights"].mean(0).round(3).tolist() for k in keys},
         "corruption": corruption_table(model, data, cfg)}
    log(fusion_report.write_report(r, results))
    return 0


def train_recorded(data: Data, cfg: FusionTrainConfig, seeds: int, coverage: float, repository: Path, results: Path,
                   command: str, log=print) -> int:
    """Real paired data: dev as recorded, calibration per the availability patterns that occur in it."""
    dev = data.recorded["dev"]
    y = dev.split.emotion
    keys = [cal.pattern_key(m) for m in dev.mask]
    per_seed, models = [], []
    for seed in range(seeds):
        model, info = train_one(data, cfg, seed, log)
        p = predict(model, dev)
        info["dev"] = metrics.summary(y, p["logits"].argmax(1), len(LABELS))
        log(f"  seed {seed}: dev weighted F1 {info['dev']['weighted_f1']:.4f}")
        per_seed.append(info)
        models.append((model, p))
    ship = int(np.argmax([s["val_weighted_f1"] for s in per_seed]))
    model, p = models[ship]
    calibration = cal.fit_patterns(p["logits"], y, keys, coverage)
    calibration["experts"] = cal.fit_experts(p["expert_logits"], dev.mask, y)
    calibration["fitted_on"] = "the user's development manifest, per availability pattern"
    card = fusion_report.recorded_card(per_seed, len(y))
    version = save(repository / "fusion" / "1", model, calibration,
                   {"seed": ship, "epoch": per_seed[ship]["epoch"], "data": "user manifest"}, data.encoders, card,
                   fit_text_shift(data))
    log(fusion_report.write_recorded_report(results / "fusion_manifest.md", version, command, per_seed, keys))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
