"""What `merc train fusion` writes besides the model: bench/results/fusion.md and .json, the figures, the model cards.

Apart from the trainer (merc.training.fusion) so that the training reads as the protocol it runs;
the numbers are the trainer's, this module only lays them out.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from merc.data import pairing
from merc.data.fusion_examples import DEV_HALVINGS, dev_halves
from merc.evaluation import metrics, plots
from merc.pipeline import calibration as cal
from merc.pipeline.labels import LABELS
from merc.training.artifacts import pm, save_markdown

if TYPE_CHECKING:
    from merc.training.fusion import FusionTrainConfig

FIGURE_PATTERNS = ("text", "text+audio+vision")


def out_of_fold(z: np.ndarray, labels: np.ndarray, lengths: list[int]) -> np.ndarray:
    """Temperature-scaled probabilities where each dev half was scaled by a temperature fitted on the other."""
    halves = dev_halves(lengths, 0)
    probs = np.zeros_like(z)
    for a, b in (halves, halves[::-1]):
        probs[b] = cal.softmax(z[b], cal.fit_temperature(z[a], labels[a]))
    return probs


def write_figures(folder: Path, out: dict[str, dict], y: np.ndarray, lengths: list[int]) -> None:
    """Reliability diagrams (before / after cross-fitted temperature) and the text-only confusion matrix."""
    for k in FIGURE_PATTERNS:
        z = out[k]["logits"]
        plots.reliability_diagram(folder / f"fusion_reliability_{k}.png",
                                  {"before": cal.softmax(z), "after (cross-fitted T)": out_of_fold(z, y, lengths)},
                                  y, f"MELD dev, {k}")
    plots.confusion_matrix(folder / "fusion_confusion_text.png",
                           metrics.confusion_matrix(y, out["text"]["logits"].argmax(1), len(LABELS)), "MELD dev, text only")


def report(r: dict, path: Path, figures: Path) -> str:
    keys = ["+".join(p) for p in pairing.PATTERNS]
    seeds = r["per_seed"]
    wf1 = {k: [s["patterns"][k]["weighted_f1"] for s in seeds] for k in keys}
    best_single = lambda k: max(np.mean(wf1[m]) for m in k.split("+"))
    lines = [
        "# Fusion network: reliability-gated text/voice/face experts + causal dialogue context",
        "",
        f"Command: `{r['command']}`  ",
        f"Wall time: {r['wall_s']:.0f} s on {r['machine']}  ",
        f"Shipped: `{r['out']}` version `{r['version']}` (seed {r['shipped_seed']}: best held-out-train weighted F1)  ",
        f"Encoders: {', '.join(f'{k} `{v}`' for k, v in r['encoders'].items())}",
        "",
        "## Data and the pairing protocol",
        "",
        "| role | text (real dialogues) | voice (by label) | face (by label) |",
        "|---|---|---|---|",
        f"| gradient steps | MELD train minus 10 % of dialogues ({r['sizes']['fit']} utt.) | RAVDESS actors 17-18 | FER2013 publictest, half A |",
        *([f"| how many epochs, at most (`choose_epochs`) | MELD train, held-out 10 % ({r['sizes']['val']} utt.), "
           "every modality pattern | trained on actor 17, scored on 18, and the other way | half A in two folds, likewise |"]
          if r["train_config"].get("pool_folds") else []),
        f"| early stopping, shipped seed | MELD train, held-out 10 % ({r['sizes']['val']} utt.), text alone "
        "| — (the training clips only) | — (the training faces only) |",
        f"| reported figures, calibration fit | MELD dev ({r['sizes']['dev']} utt.) | RAVDESS actors 19-20 | FER2013 publictest, half B |",
        "",
        "No aligned multimodal dialogue corpus is available here. Text and context are real MELD dialogues;",
        "each utterance gets, **by its label**, a voice clip and a face that the voice/face encoders never",
        "trained on, clean or corrupted (noise at 20/10/5/0 dB, clipping; blur, occlusion, darkness), and a",
        "random subset of modalities in training (text 0.8, voice 0.5, face 0.5). Voice and face are therefore",
        "*independent of the words given the label*: figures for patterns with voice or face measure the",
        "protocol, not real conversations. Unimodal figures on real data: `audio_ravdess.md`, `vision_fer2013.md`.",
        "",
        f"## Every modality subset, MELD dev with paired voice/face ({len(seeds)} seeds, mean ± std)",
        "",
        "ECE and coverage 'after' are cross-fitted: per-pattern temperature and conformal threshold fitted on",
        f"one half of the dev dialogues, measured on the other ({DEV_HALVINGS} random halvings, both ways).",
        "'ECE floor' is what a perfectly calibrated model with these probabilities would still measure on",
        "this many examples (labels drawn from the probabilities themselves): ECE near it is noise, not miscalibration.",
        "",
        f"| pattern | weighted F1 | macro F1 | accuracy | ECE before | ECE after | ECE floor | NLL after | coverage ({r['coverage']:.0%}) "
        "| set size | ≥ best single member |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k in keys:
        c = [s["calibration"][k] for s in seeds]
        single = "—" if "+" not in k else ("yes" if np.mean(wf1[k]) >= best_single(k) else f"**no** ({np.mean(wf1[k]) - best_single(k):+.4f})")
        lines.append(
            f"| {k} | {pm(wf1[k])} | {pm([s['patterns'][k]['macro_f1'] for s in seeds])} | "
            f"{pm([s['patterns'][k]['accuracy'] for s in seeds])} | {pm([x['before']['ece'] for x in c])} | "
            f"{pm([x['after']['ece'] for x in c])} | {pm([x['after'].get('ece_floor', np.nan) for x in c])} | "
            f"{pm([x['after']['nll'] for x in c])} | "
            f"{pm([x['after']['coverage'] for x in c])} | {pm([x['after']['set_size'] for x in c])} | {single} |")
    lines += [
        "",
        "Mean gate weights (text, voice, face) on dev, shipped seed: " + "; ".join(
            f"{k}: " + "/".join(f"{w:.2f}" for w in r["weights"][k]) for k in keys if "+" in k) + ".",
        "",
        "## The gate under corruption (shipped seed; MELD dev text + one other modality, paired)",
        "",
        "| modality | variant | its mean gate weight | weighted F1 |",
        "|---|---|---|---|",
        *[f"| {m} | {name} | {w:.3f} | {f:.4f} |" for m in ("audio", "vision") for name, w, f in r["corruption"][m]],
        "",
        "## Voice alone and face alone on their own corpora (one utterance per conversation, clean)",
        "",
        "The encoder's own head against the same embedding through the fusion network (weighted F1, mean ± std",
        "over fusion seeds): the fusion must not impose MELD's class prior on a lone clip or face.",
        "",
        "| modality | data | n | encoder alone | through the fusion |",
        "|---|---|---|---|---|",
        *[f"| {m} | {seeds[0]['standalone'][m]['corpus']} | {seeds[0]['standalone'][m]['n']} | "
          f"{pm([s['standalone'][m]['encoder'] for s in seeds])} | {pm([s['standalone'][m]['fusion'] for s in seeds])} |"
          for m in ("audio", "vision")],
        "",
        "## Text only, MELD dev (real data; the headline)",
        "",
        "| seed | epoch | the pool folds' best epochs | held-out-train wF1 | dev wF1 | dev macro F1 | dev accuracy | "
        + " | ".join(f"recall {n}" for n in LABELS) + " |",
        "|---" * (7 + len(LABELS)) + "|",
    ]
    for s in seeds:
        t = s["patterns"]["text"]
        folds = ", ".join(map(str, s.get("fold_epochs", []))) or "—"
        lines.append(f"| {s['seed']} | {s['epoch']} | {folds} | {s['val_weighted_f1']:.4f} | {t['weighted_f1']:.4f} | {t['macro_f1']:.4f} | "
                     f"{t['accuracy']:.4f} | " + " | ".join(f"{x:.3f}" for x in t["recall"]) + " |")
    lines += [
        "",
        f"Figures: reliability diagrams `{figures.name}/fusion_reliability_text.png`, "
        f"`{figures.name}/fusion_reliability_text+audio+vision.png`; confusion matrix `{figures.name}/fusion_confusion_text.png` (shipped seed).",
        "",
        "## Setup",
        "",
        f"Training: `{json.dumps(r['train_config'])}`",
        "",
    ]
    return save_markdown(path, lines)


def write_report(r: dict, results: Path) -> str:
    """fusion.md (returned) and fusion.json, the run's full record."""
    text = report(r, results / "fusion.md", results / "figures")
    (results / "fusion.json").write_text(json.dumps(r, indent=2, default=float) + "\n")
    return text


MODEL_CARD = """# Model card: MERC fusion network ({version})

- **What**: per utterance, a text expert (adapted {text_base} embedding -> MLP), a voice expert
  and a face expert (each the log-posterior of its encoder's own frozen emotion head -> MLP) are mixed
  by a **reliability gate** that sees the missing-modality mask, the quality signals (text length;
  voiced ratio, SNR, clipping; face found, detector score, sharpness) and each expert's confidence.
  A 2-layer causal transformer over the last {k} fused vectors of the conversation (speaker, same-speaker
  and distance embeddings) then gives 7 emotions (neutral, joy, sadness, anger, fear, disgust, surprise)
  and 3 sentiments. The per-modality posteriors give the incongruence score (mean pairwise
  Jensen-Shannon divergence).
- **How it was trained — read this**: no aligned multimodal dialogue corpus was available. Text and
  context are real MELD dialogues (Friends transcripts). Voice clips (RAVDESS actors 17-20, never seen
  by the voice encoder's training) and faces (FER2013 publictest, never seen by the face encoder's
  training) were **paired with MELD utterances by emotion label**, under modality dropout and
  corruption. The gate has therefore learned how reliable each modality is *on these corpora*, and
  that voice and face carry information independent of the words. On real conversations, where the
  modalities are correlated and recorded differently, the text-only figures are the trustworthy ones.
  Retrain on a real paired corpus (your own manifest with `label`, or MELD raw media / IEMOCAP) with
  `merc train fusion` once the loaders for it are pointed at your data.
- **Training**: class-weighted cross-entropy with AdamW; what ships is the moving average of the
  weights (decay {ema} per step), early-stopped on held-out MELD train dialogues' text{bound}.
- **Metrics (MELD dev, {seeds} seeds)**: text only weighted F1 {wf1_text}; all three modalities (paired
  protocol) {wf1_all}; per-pattern table, ECE and conformal coverage in `bench/results/fusion.md`.
- **Calibration**: temperature and split-conformal threshold ({coverage:.0%} coverage) per
  modality-availability pattern, fitted on MELD dev with the paired voice/face (calibration.json).
  Text beyond 99 % of MELD dev's distance to the training text loses its say in the posterior and
  the prediction set (text_shift.safetensors; `bench/results/calibration_by_source.md`).
- **Data licences**: MELD (GPL-3.0 repository, research use), RAVDESS (CC BY-NC-SA 4.0: the weights
  derived from it are for non-commercial use unless you retrain on data you may use commercially),
  FER2013 (research use), {text_base} (Apache-2.0).
- **Intended use**: research and prototyping of per-utterance emotion events in English conversation.
- **Limits**: scripted sitcom text, acted voices and posed faces are not contact-centre or tele-health
  audio/video; rare classes (fear, disgust) are recognised poorly; calibration holds on data like the
  development data only (words from elsewhere are distrusted, not recalibrated); not for decisions
  about individuals.
"""


def model_card(cfg: FusionTrainConfig, per_seed: list[dict], coverage: float, text_base: str = "all-MiniLM-L6-v2") -> str:
    """The card, with ``{version}`` left for the trainer to fill in once the weights are hashed."""
    mean_wf1 = lambda k: pm([s["patterns"][k]["weighted_f1"] for s in per_seed])
    return MODEL_CARD.replace("{version}", "{{version}}").format(
        k=cfg.model.context, ema=cfg.ema, seeds=len(per_seed), wf1_text=mean_wf1("text"), wf1_all=mean_wf1("text+audio+vision"),
        coverage=coverage, text_base=text_base,
        bound=", within as many epochs as voices and faces it had not trained on chose (two folds of the training pools)"
        if cfg.pool_folds else "")


MODEL_CARD_RECORDED = """# Model card: MERC fusion network ({{version}}), trained on a user's labelled manifest

- **What**: as the shipped fusion network (reliability gate over text/voice/face experts + causal context).
- **Data**: the user's own paired recordings, encoded by the shipped encoders; {n} development utterances.
- **Metrics (dev manifest, {seeds} seeds)**: weighted F1 {wf1}; see bench/results/fusion_manifest.md.
- **Calibration**: per availability pattern seen in the development manifest; with enough recorded text
  (merc.pipeline.text_shift), words unlike it lose their say.
- **Licence and limits**: those of the user's data and of the encoders' cards.
"""


def recorded_card(per_seed: list[dict], n: int) -> str:
    return MODEL_CARD_RECORDED.format(seeds=len(per_seed), wf1=pm([s["dev"]["weighted_f1"] for s in per_seed]), n=n)


def write_recorded_report(path: Path, version: str, command: str, per_seed: list[dict], keys: list[str]) -> str:
    """The seed table of a model trained on a user's manifest; keys: each dev row's availability pattern."""
    seeds = len(per_seed)
    lines = [f"# Fusion network trained on a labelled manifest ({version})", "", f"Command: `{command}`", "",
             f"| metric (dev manifest, {seeds} seeds) | mean ± std |", "|---|---|",
             *[f"| {k} | {pm([s['dev'][k] for s in per_seed])} |" for k in ("weighted_f1", "macro_f1", "accuracy")], "",
             "Patterns in dev: " + ", ".join(f"{k}: {keys.count(k)}" for k in sorted(set(keys))), ""]
    return save_markdown(path, lines)
