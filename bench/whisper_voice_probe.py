"""Does Whisper's encoder hear emotion? A linear probe on frozen Whisper-base features, RAVDESS, by actor.

Each clip's voiced part (silero-vad, first to last segment) goes through the Whisper base encoder that
transcription already ships (merc.media.transcription: CTranslate2 int8, one 30 s window per clip);
the encoder frames that cover the clip are pooled to their mean and standard deviation (1024 values).
A logistic regression on those (standardised) predicts the seven labels.

Speaker normalisation: each actor's clips are standardised by that actor's own mean and spread over
all their clips, so what is left is how a clip differs from that voice's usual. In a deployment the
statistics would come from the speaker's earlier turns in the conversation; here they come from all of
the actor's clips, an optimistic stand-in that the report names.

Protocol: actors 1-16 are the development actors. Four folds of four actors (1-4, 5-8, 9-12, 13-16)
choose the regularisation C by leave-one-fold-out weighted F1, and their spread is the dev-actor spread.
Then one fit on actors 1-16 is scored on actors 17-20, the validation actors the shipped voice CNN
reports on (bench/results/audio_ravdess.md: weighted F1 0.689 ± 0.004). Logistic regression is
deterministic, so there are no seeds; the folds give the spread.

    PYTHONPATH=services .venv/bin/python bench/whisper_voice_probe.py [--threads 2]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from merc.data import ravdess
from merc.evaluation import metrics
from merc.media import SAMPLE_RATE, transcription, vad
from merc.pipeline.labels import LABELS

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
CACHE = REPO / ".cache"
FOLDS = (range(1, 5), range(5, 9), range(9, 13), range(13, 17))
C_GRID = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0)
FRAME_S = 0.02  # one Whisper encoder frame per 20 ms


def voiced(wave: np.ndarray) -> np.ndarray:
    segments = vad.speech_segments(wave)
    return wave[segments[0][0] : segments[-1][1]] if segments else wave


def features(clips: list[ravdess.Clip], threads: int, batch: int = 4) -> np.ndarray:
    """[clips, 1024]: mean and std of the encoder frames over each clip's voiced part (cached by clip list)."""
    key = hashlib.sha256("\n".join(c.path.name for c in clips).encode()).hexdigest()[:12]
    path = CACHE / f"whisper-voice-{key}.npy"
    if path.is_file():
        return np.load(path)
    from faster_whisper.audio import pad_or_trim

    model = transcription._model(threads)
    waves = [voiced(sf.read(c.path, dtype="float32")[0]) for c in clips]
    out = []
    for i in range(0, len(waves), batch):
        group = waves[i : i + batch]
        mels = np.stack([pad_or_trim(model.feature_extractor(w)) for w in group])
        encoded = np.asarray(model.encode(mels))  # [b, 1500, 512]
        for w, frames in zip(group, encoded, strict=True):
            used = frames[: max(1, int(np.ceil(len(w) / SAMPLE_RATE / FRAME_S)))]
            out.append(np.concatenate([used.mean(axis=0), used.std(axis=0)]))
        print(f"  encoded {min(i + batch, len(waves))}/{len(waves)}", flush=True)
    x = np.stack(out).astype(np.float32)
    CACHE.mkdir(exist_ok=True)
    np.save(path, x)
    return x


def per_speaker(x: np.ndarray, actors: np.ndarray) -> np.ndarray:
    out = np.empty_like(x)
    for a in np.unique(actors):
        m = actors == a
        out[m] = (x[m] - x[m].mean(axis=0)) / (x[m].std(axis=0) + 1e-5)
    return out


def fit_score(x_train, y_train, x_test, y_test, c: float) -> dict:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    model = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=3000))
    model.fit(x_train, y_train)
    return metrics.summary(y_test, model.predict(x_test), len(LABELS))


def protocol(x: np.ndarray, y: np.ndarray, actors: np.ndarray) -> dict:
    dev = actors <= 16
    curves = {}
    for c in C_GRID:
        folds = []
        for held in FOLDS:
            test = np.isin(actors, list(held))
            folds.append(fit_score(x[dev & ~test], y[dev & ~test], x[test], y[test], c))
        curves[c] = folds
    best = max(C_GRID, key=lambda c: np.mean([f["weighted_f1"] for f in curves[c]]))
    val = fit_score(x[dev], y[dev], x[~dev], y[~dev], best)
    return {"C": best,
            "dev_folds_weighted_f1": [f["weighted_f1"] for f in curves[best]],
            "dev_folds_accuracy": [f["accuracy"] for f in curves[best]],
            "cv_by_C": {str(c): float(np.mean([f["weighted_f1"] for f in curves[c]])) for c in C_GRID},
            "validation_weighted_f1": val["weighted_f1"], "validation_accuracy": val["accuracy"],
            "validation_recall": [float(r) for r in val["recall"]]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    started = time.time()
    clips = ravdess.load_clips()
    x = features(clips, args.threads)
    y = np.array([c.label for c in clips])
    actors = np.array([c.actor for c in clips])
    rows = {"as is": protocol(x, y, actors), "speaker-normalised": protocol(per_speaker(x, actors), y, actors)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "whisper_voice_probe.json").write_text(json.dumps(rows, indent=2) + "\n")
    pm = lambda v: f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}"  # noqa: E731
    lines = [
        "# A linear probe on frozen Whisper-base encoder features (RAVDESS, by actor)",
        "",
        "Command: `PYTHONPATH=services .venv/bin/python bench/whisper_voice_probe.py`  ",
        f"Machine: {platform.machine()} CPU, {args.threads} threads; {time.time() - started:.0f} s (features cached after the first run).",
        "",
        f"{len(clips)} clips, 16 kHz, voiced part only. Features: mean and std of Whisper base's encoder frames "
        "(CTranslate2 int8, the transcription model). Probe: standardise, logistic regression. C chosen by "
        "leave-one-fold-out weighted F1 over four folds of four development actors (1-16); the folds' spread is the "
        "dev-actor spread. Validation actors 17-20 scored once, after a fit on 1-16. Deterministic: no seeds.",
        "",
        "| features | C | dev actors, 4 folds: weighted F1 | accuracy | validation actors 17-20: weighted F1 | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['C']} | {pm(r['dev_folds_weighted_f1'])} | {pm(r['dev_folds_accuracy'])} | "
                     f"{r['validation_weighted_f1']:.3f} | {r['validation_accuracy']:.3f} |")
    lines += [
        "",
        "Speaker-normalised uses each actor's statistics over all of that actor's clips: in a conversation they would "
        "come from the speaker's earlier turns only, so that row is an upper bound for what the normalisation gives.",
        "",
        "For comparison, the shipped voice CNN (log-mel, trained on actors 1-16): validation weighted F1 0.689 ± 0.004 "
        "over 3 seeds (`audio_ravdess.md`).",
        "",
    ]
    (RESULTS / "whisper_voice_probe.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
