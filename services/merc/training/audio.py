"""Train the speech-emotion CNN on RAVDESS: actors 1-16 train, 17-20 validation (never mixed).

    merc train audio [--seeds 3] [--epochs 150] [--device cuda] [--out model_repository/audio_encoder/1]

The schedule is fixed in advance (cosine decay over --epochs) and the reported
figure is the last epoch's: validation actors never choose an epoch or a seed.

CPU (the default) is deterministic but slow for these widths; `--device cuda` runs the
same code in minutes, and a seed draws the same batches on either (its generator lives on the CPU).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torch.nn.functional as F

from merc import progress
from merc.data.ravdess import Clip, load_clips, split_by_actor
from merc.evaluation import metrics
from merc.models.audio_cnn import AudioCNN, AudioConfig
from merc.models.audio_features import SAMPLE_RATE, log_mel, trim_silence
from merc.pipeline.labels import LABELS
from merc.training.artifacts import relative, save_model, write_report

CROP_S = 2.0


def load_waves(clips: list[Clip]) -> list[torch.Tensor]:
    out = []
    for c in clips:
        x, sr = sf.read(c.path, dtype="float32", always_2d=True)
        if sr != SAMPLE_RATE:
            raise ValueError(f"{c.path} is {sr} Hz; RAVDESS here is expected at {SAMPLE_RATE}")
        out.append(trim_silence(torch.from_numpy(x.mean(axis=1))))
    return out


def augment(wave: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Speed perturbation, a random 3 s crop (looped if shorter) and noise at a random SNR."""
    if torch.rand(1, generator=g) < 0.5:
        rate = 0.9 + 0.2 * float(torch.rand(1, generator=g))
        n = int(len(wave) / rate)
        wave = F.interpolate(wave[None, None], size=n, mode="linear", align_corners=False)[0, 0]
    n = int(CROP_S * SAMPLE_RATE)
    if len(wave) < n:
        wave = wave.repeat(math.ceil(n / len(wave)))
    start = int(torch.randint(0, len(wave) - n + 1, (1,), generator=g))
    wave = wave[start : start + n]
    if torch.rand(1, generator=g) < 0.6:
        snr_db = 5 + 25 * float(torch.rand(1, generator=g))
        noise = torch.randn(n, generator=g)
        scale = wave.pow(2).mean().sqrt() / (10 ** (snr_db / 20)) / noise.pow(2).mean().sqrt()
        wave = wave + scale * noise
    return wave


def spec_augment(mel: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    mel = mel.clone()
    for _ in range(2):
        w = int(torch.randint(0, 9, (1,), generator=g))
        f0 = int(torch.randint(0, mel.shape[1] - w + 1, (1,), generator=g))
        mel[:, f0 : f0 + w] = 0
        w = int(torch.randint(0, 25, (1,), generator=g))
        t0 = int(torch.randint(0, mel.shape[2] - w + 1, (1,), generator=g))
        mel[:, :, t0 : t0 + w] = 0
    return mel


@torch.inference_mode()
def predict(model: AudioCNN, waves: list[torch.Tensor]) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    return np.stack([torch.softmax(model(log_mel(w.to(device)))["logits"], -1)[0].cpu().numpy() for w in waves])


def train_one(
    train: list[torch.Tensor], y: torch.Tensor, cfg: AudioConfig, epochs: int, seed: int, log=print, device: str = "cpu"
) -> AudioCNN:
    """Augmentation draws from a CPU generator, so a seed gives the same batches on any device."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = AudioCNN(cfg).to(device)
    y = y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-2)
    steps_per_epoch = math.ceil(len(train) / 32)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=epochs * steps_per_epoch, pct_start=0.15)
    for epoch in progress.steps(range(epochs), f"voice CNN, seed {seed}: epochs"):
        model.train()
        order = torch.randperm(len(train), generator=g)
        total = 0.0
        for i in range(0, len(order), 32):
            idx = order[i : i + 32]
            batch = torch.stack([augment(train[j], g) for j in idx]).to(device)
            mel = spec_augment(log_mel(batch), g)
            loss = F.cross_entropy(model(mel)["logits"], y[idx.to(device)], label_smoothing=0.05)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        if (epoch + 1) % 10 == 0 or epoch == epochs - 1:
            log(f"  seed {seed} epoch {epoch + 1}: train loss {total / len(train):.3f}")
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[3]
    p = argparse.ArgumentParser(prog="merc train audio", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--first-seed", type=int, default=0, help="seeds run are first-seed .. first-seed+seeds-1")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--out", type=Path, default=root / "model_repository" / "audio_encoder" / "1")
    p.add_argument("--report", type=Path, default=root / "bench" / "results" / "audio_ravdess.md")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu (deterministic, the default) or cuda")
    p.add_argument("--channels", default=None, help="conv widths, comma-separated (default: the config's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()

    train_clips, val_clips = split_by_actor(load_clips())
    train_w, val_w = load_waves(train_clips), load_waves(val_clips)
    y_train = torch.tensor([c.label for c in train_clips])
    y_val = np.array([c.label for c in val_clips])
    print(f"train {len(train_clips)} clips (actors 1-16) / validation {len(val_clips)} clips (actors 17-20)")

    cfg = AudioConfig(channels=tuple(int(c) for c in args.channels.split(","))) if args.channels else AudioConfig()
    rows, models = [], []
    for seed in range(args.first_seed, args.first_seed + args.seeds):
        model = train_one(train_w, y_train, cfg, args.epochs, seed, device=args.device)
        pred = predict(model, val_w).argmax(1)
        s = metrics.summary(y_val, pred, len(LABELS))
        rows.append(s)
        models.append(model.cpu())
        print(f"  seed {seed}: validation weighted F1 {s['weighted_f1']:.4f}, macro F1 {s['macro_f1']:.4f}, accuracy {s['accuracy']:.4f}")

    version = save_model(args.out, models[0], cfg.to_dict(), "audio-cnn")

    write_report(
        args.report,
        "Speech emotion CNN on RAVDESS (log-mel, permissive path)",
        "merc train audio",
        argv,
        started,
        args.threads,
        relative(args.out, root),
        version,
        f"Data: RAVDESS speech, 16 kHz; train actors 1-16 ({len(train_clips)} clips), validation actors 17-20 "
        f"({len(val_clips)} clips); calm → neutral; silence trimmed. Fixed schedule: {args.epochs} epochs, one-cycle LR, "
        "the last epoch is reported. Augmentation: speed 0.9-1.1, random 2 s crops, noise at 5-30 dB SNR, SpecAugment.",
        rows,
        "validation actors 17-20",
        args.device,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
