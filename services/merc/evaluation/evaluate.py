"""`merc eval`, `merc calibrate`, `merc export`: measure, recalibrate and ship the committed models.

eval: every shipped model on its development data, as served (calibration included), with
confusion matrices and reliability diagrams; seed means live in the trainers' reports.
calibrate: refit the fusion model's per-pattern temperatures and conformal thresholds on
development data (e.g. at another coverage) without retraining.
export: copy the model repository, checksums verified, to a folder Triton can serve.
eval and calibrate take ``--tier`` (merc.models.tiers): another tier's reports go to its own folder.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import numpy as np
import torch

from merc.data.meld import repo_root
from merc.evaluation import metrics, plots
from merc.models import tiers
from merc.pipeline import calibration as cal
from merc.pipeline.labels import LABELS, MODALITIES


def _summary(y: np.ndarray, probs: np.ndarray) -> dict:
    s = metrics.summary(y, probs.argmax(1), len(LABELS))
    s.update(ece=cal.ece(probs, y), nll=cal.nll(probs, y), brier=cal.brier(probs, y), n=int(len(y)))
    return s


def _figures(figures: Path, name: str, title: str, y: np.ndarray, probs: np.ndarray) -> None:
    plots.confusion_matrix(figures / f"eval_{name}_confusion.png", metrics.confusion_matrix(y, probs.argmax(1), len(LABELS)), title)
    plots.reliability_diagram(figures / f"eval_{name}_reliability.png", {"as served": probs}, y, title)


def evaluate_audio(repository: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from merc.data.ravdess import load_clips, split_by_actor
    from merc.media import decode_audio
    from merc.models.encoders import AudioEmotionEncoder

    encoder = AudioEmotionEncoder(repository / "audio_encoder" / "1")
    _, clips = split_by_actor(load_clips())
    probs = []
    for c in clips:
        wave = decode_audio(c.path.read_bytes())  # the path a served request takes
        probs.append(encoder.infer({"WAVE": wave[None], "LENGTH": np.array([[len(wave)]])})["PROBS"][0])
    return np.array([c.label for c in clips]), np.array(probs, dtype=np.float64), np.array([c.actor for c in clips])


def evaluate_faces(repository: Path) -> tuple[np.ndarray, np.ndarray]:
    from merc.data.fer2013 import load_split
    from merc.models.encoders import FaceEmotionEncoder

    encoder = FaceEmotionEncoder(repository / "face_encoder" / "1")
    x, y = load_split("publictest")
    probs = np.concatenate([encoder.infer({"FACES": x[s : s + 512]})["PROBS"] for s in range(0, len(x), 512)])
    return y, probs.astype(np.float64)


def _fusion_patterns(repository: Path, cache: Path, tier: str):
    """(the fusion's data, {pattern: logits}, the predictor, evaluate_patterns' outputs) of the shipped fusion
    model of the text tier on the paired dev set."""
    from merc.data.fusion_examples import dev_pairing, evaluate_patterns, load_data
    from merc.models.predictor import FusionPredictor

    predictor = FusionPredictor(tiers.folder(repository / "fusion" / "1", tier))
    data = load_data(repository, cache, log=lambda *_: None, tier=tier)
    out = evaluate_patterns(predictor.model, dev_pairing(data))
    return data, {k: v["logits"] for k, v in out.items()}, predictor, out


def served(predictor, logits: dict[str, np.ndarray], text: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each pattern's (posteriors, conformal thresholds) as FusionPredictor.infer serves those rows, from
    evaluate_patterns' logits: the pattern's calibration, and the text shift guard, which mixes toward the
    same rows' logits without text."""
    distrust = predictor.distrust(text, np.ones((len(text), 1)))
    out = {}
    for key, z in logits.items():
        mask = np.array([float(m in key.split("+")) for m in MODALITIES])
        rest = "+".join(m for m in key.split("+") if m != "text")
        rows = [predictor.posterior(z[i], mask, logits[rest][i] if rest else None, distrust[i] * mask[0]) for i in range(len(z))]
        out[key] = (np.array([p for p, _ in rows]), np.array([t for _, t in rows]))
    return out


def evaluate(repository: Path, results: Path, cache: Path, log=print, tier: str = tiers.DEFAULT) -> dict:
    figures = results / "figures"
    report: dict = {"models": {}, "tier": tier}
    t0 = time.time()
    data, logits, predictor, _ = _fusion_patterns(repository, cache, tier)
    y = data.dev.emotion
    for key, (probs, thresholds) in served(predictor, logits, data.dev.text).items():
        s = _summary(y, probs)
        s["coverage"], s["set_size"] = cal.empirical_coverage(probs, y, thresholds)
        report["models"][f"fusion {key}"] = s
        if key in ("text", "text+audio+vision"):
            _figures(figures, f"fusion_{key}", f"fusion, MELD dev, {key}", y, probs)
    log(f"  fusion: {time.time() - t0:.0f}s")
    y, probs, actors = evaluate_audio(repository)
    report["models"]["audio encoder"] = _summary(y, probs)
    # The gap between speakers, which one pooled figure hides (issue 18: show it before users meet it).
    report["audio_per_actor"] = {int(a): metrics.summary(y[actors == a], probs[actors == a].argmax(1), len(LABELS))["weighted_f1"]
                                 for a in np.unique(actors)}
    _figures(figures, "audio", "voice encoder, RAVDESS actors 17-20", y, probs)
    y, probs = evaluate_faces(repository)
    report["models"]["face encoder"] = _summary(y, probs)
    _figures(figures, "face", "face encoder, FER2013 publictest", y, probs)
    report["versions"] = versions(repository, tier)
    report["wall_s"] = round(time.time() - t0)
    results.mkdir(parents=True, exist_ok=True)
    (results / "eval.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    text = eval_markdown(report)
    (results / "eval.md").write_text(text)
    log(text)
    return report


def versions(repository: Path, tier: str = tiers.DEFAULT) -> dict[str, str]:
    """Each trained model's weights version, the text tier's for the models that differ by tier."""
    out = {}
    for version_dir in sorted(repository.glob("*/1")):
        model = version_dir.parent.name
        folder = tiers.folder(version_dir, tier) if model in tiers.MODELS else version_dir
        if (folder / "config.json").is_file():
            out[model] = json.loads((folder / "config.json").read_text()).get("version")
    return out


DATA = {
    "fusion": "MELD dev + paired voice/face*",
    "audio encoder": "RAVDESS actors 17-20 (never trained on)",
    "face encoder": "FER2013 publictest",
}


def eval_markdown(r: dict) -> str:
    lines = [
        "# Evaluation of the shipped models (`merc eval`)",
        "",
        *([f"Text tier: **{r['tier']}** (`merc eval --tier {r['tier']}`): its text encoder and its fusion network.", ""]
          if r.get("tier", tiers.DEFAULT) != tiers.DEFAULT else []),
        "Each model as served, on its development data. Fusion rows use the shipped per-pattern calibration",
        "and text shift guard, both fitted on this same dev set (so their ECE/coverage here are in-sample; the",
        "cross-fitted figures and the 3-seed means are in `fusion.md`; the guard off and on, and on another",
        "source, in `calibration_by_source.md`). Encoder probabilities are uncalibrated softmax.",
        "",
        "| model | data | n | weighted F1 | macro F1 | accuracy | ECE | NLL | Brier | coverage | " + " | ".join(f"recall {n}" for n in LABELS) + " |",
        "|---" * (10 + len(LABELS)) + "|",
    ]
    for name, s in r["models"].items():
        data = DATA["fusion"] if name.startswith("fusion") else DATA[name]
        cov = f"{s['coverage']:.3f}" if "coverage" in s else "—"
        lines.append(f"| {name} | {data} | {s['n']} | {s['weighted_f1']:.4f} | {s['macro_f1']:.4f} | {s['accuracy']:.4f} | "
                     f"{s['ece']:.4f} | {s['nll']:.4f} | {s['brier']:.4f} | {cov} | " + " | ".join(f"{x:.3f}" for x in s["recall"]) + " |")
    if "audio_per_actor" in r:
        per = r["audio_per_actor"]
        lines += ["", "Voice encoder per validation actor, weighted F1: " + ", ".join(f"{a} {f:.3f}" for a, f in per.items())
                  + f" (mean {np.mean(list(per.values())):.3f} ± {np.std(list(per.values())):.3f} across actors)."]
    lines += ["", "Versions: " + ", ".join(f"{k} `{v}`" for k, v in r["versions"].items()), "",
              "\\* MELD dev dialogues (real text); voice and face paired with each utterance by label from RAVDESS",
              "actors 19-20 and FER2013 publictest half B (the pairing protocol, `fusion.md`). Only the `fusion text` row is",
              "real data end to end (text alone).", "",
              "Figures (`figures/`): `eval_<model>_confusion.png`, `eval_<model>_reliability.png`.", ""]
    return "\n".join(lines)


def expert_report(y: np.ndarray, lengths: np.ndarray, expert_logits: np.ndarray, halvings: int = 3) -> str:
    """Each expert's ECE on dev dialogues it was not calibrated on, raw softmax vs its own temperature:
    fitted on a random half of the dialogues and scored on the other, both ways, ``halvings`` times."""
    dialogue = np.repeat(np.arange(len(lengths)), lengths)
    rows = {m: ([], []) for m in MODALITIES}
    for seed in range(halvings):
        half = np.isin(dialogue, np.random.default_rng(seed).permutation(len(lengths))[: len(lengths) // 2])
        for fit_rows, held_out in ((half, ~half), (~half, half)):
            for j, m in enumerate(MODALITIES):
                t = cal.fit_temperature(expert_logits[fit_rows, j], y[fit_rows])
                rows[m][0].append(cal.ece(cal.softmax(expert_logits[held_out, j], 1.0), y[held_out]))
                rows[m][1].append(cal.ece(cal.softmax(expert_logits[held_out, j], t), y[held_out]))
    lines = ["# Each modality alone: calibration of the fusion experts (`merc calibrate`)", "",
             "What events carry as `modality_posteriors`: each expert's posterior at its own temperature. ECE (15 bins)",
             f"on held-out MELD dev dialogues with the paired voice/face (`fusion.md`), {len(y)} utterances in {len(lengths)}",
             f"dialogues: the temperature fitted on half the dialogues, scored on the other half, both ways, {halvings} random",
             "halvings (mean ± sd over the 2×halvings scores). Never the test split.", "",
             "| expert | ECE raw softmax | ECE at its temperature |", "|---|---|---|"]
    for m, (raw, fitted) in rows.items():
        lines.append(f"| {m} | {np.mean(raw):.4f} ± {np.std(raw):.4f} | {np.mean(fitted):.4f} ± {np.std(fitted):.4f} |")
    return "\n".join(lines) + "\n"


def recalibrate(repository: Path, cache: Path, coverage: float, results: Path | None = None, log=print,
                tier: str = tiers.DEFAULT) -> dict:
    from merc.data.fusion_examples import fit_experts_on_patterns, fit_text_shift
    from merc.pipeline import text_shift

    data, logits, _, by_pattern = _fusion_patterns(repository, cache, tier)
    y, lengths = data.dev.emotion, data.dev.lengths
    keys = list(logits)
    fit = cal.fit_patterns(np.concatenate([logits[k] for k in keys]), np.tile(y, len(keys)), [k for k in keys for _ in y], coverage)
    fit["experts"] = fit_experts_on_patterns(by_pattern, y)
    fit["fitted_on"] = "MELD dev with paired RAVDESS actors 19-20 / FER2013 publictest half B, per pattern (merc calibrate)"
    out = tiers.folder(repository / "fusion" / "1", tier)
    (out / "calibration.json").write_text(json.dumps(fit, indent=2) + "\n")
    shift = fit_text_shift(data)
    shift.save(out / text_shift.FILE)
    sums = out / "SHA256SUMS"
    names = [line.split()[1] for line in sums.read_text().splitlines()]
    names += [text_shift.FILE] if text_shift.FILE not in names else []
    sums.write_text("".join(f"{hashlib.sha256((out / n).read_bytes()).hexdigest()}  {n}\n" for n in names))
    log(f"  text shift: distrust from distance {shift.start:.1f}, complete at {shift.start + shift.spread:.1f}")
    for k, f in fit["patterns"].items():
        log(f"  {k}: temperature {f['temperature']:.3f}, conformal threshold {f['threshold']:.3f} ({coverage:.0%})")
    for k, f in fit["experts"].items():
        log(f"  {k} expert: temperature {f['temperature']:.3f} (n {f['n']})")
    if results is not None:
        report = expert_report(y, lengths, by_pattern["+".join(MODALITIES)]["expert_logits"])
        results.mkdir(parents=True, exist_ok=True)
        (results / "expert_calibration.md").write_text(report)
        log(report)
    return fit


def verify(repository: Path) -> list[str]:
    """Problems with the repository's committed files (empty when every checksum holds)."""
    problems = []
    for sums in sorted(repository.glob("*/1/**/SHA256SUMS")):  # a text tier's in its subfolder
        for line in sums.read_text().splitlines():
            digest, name = line.split()
            f = sums.parent / name
            if not f.is_file() or hashlib.sha256(f.read_bytes()).hexdigest() != digest:
                problems.append(f"{f}: missing or does not match SHA256SUMS")
    return problems


def export(repository: Path, target: Path) -> int:
    problems = verify(repository)
    if problems:
        raise ValueError("; ".join(problems))
    if target.exists() and any(target.iterdir()):
        raise FileExistsError(f"{target} is not empty")
    shutil.copytree(repository, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__"))
    return sum(1 for _ in target.glob("*/config.pbtxt"))


def main(command: str, argv: list[str]) -> int:
    import argparse

    root = repo_root()
    p = argparse.ArgumentParser(prog=f"merc {command}", description=__doc__.split("\n\n")[1])
    p.add_argument("--repository", type=Path, default=root / "model_repository")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    if command in ("eval", "calibrate"):
        p.add_argument("--tier", choices=tiers.TIERS, default=tiers.DEFAULT,
                       help="the text tier (merc.models.tiers) whose text encoder and fusion are measured")
    if command == "eval":
        p.add_argument("--results", type=Path, help="report folder (default bench/results, or bench/results/TIER)")
    elif command == "calibrate":
        p.add_argument("--coverage", type=float, default=cal.DEFAULT_COVERAGE, help="conformal coverage, e.g. 0.9")
        p.add_argument("--results", type=Path,
                       help="where the experts' held-out calibration report goes (expert_calibration.md; "
                            "default bench/results, or bench/results/TIER)")
    else:
        p.add_argument("target", type=Path, help="empty (or new) folder to write the repository to")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cache = root / ".cache"
    if command != "export":
        args.results = args.results or tiers.results(root / "bench" / "results", args.tier)
    if command == "eval":
        evaluate(args.repository, args.results, cache, tier=args.tier)
    elif command == "calibrate":
        if not 0.5 <= args.coverage < 1:
            p.error("--coverage must be in [0.5, 1)")
        recalibrate(args.repository, cache, args.coverage, args.results, tier=args.tier)
    else:
        n = export(args.repository, args.target)
        print(f"exported {n} models to {args.target} (checksums verified)")
    return 0
