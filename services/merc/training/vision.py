"""Train the facial-expression CNN on FER2013 `train`; report on `publictest`.

    merc train vision [--seeds 3] [--epochs 40] [--device cuda] [--out model_repository/face_encoder/1]

A fixed schedule (one-cycle over --epochs), last epoch reported: publictest
never chooses an epoch or a seed.

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
import torch
import torch.nn.functional as F

from merc import progress
from merc.data import fer2013
from merc.evaluation import metrics
from merc.models.face_cnn import FaceCNN, FaceConfig
from merc.pipeline.labels import LABELS
from merc.training.artifacts import relative, save_model, write_report


def cached_split(split: str, cache: Path) -> tuple[np.ndarray, np.ndarray]:
    path = cache / f"fer2013-{split}.npz"
    if path.is_file():
        z = np.load(path)
        return z["x"], z["y"]
    x, y = fer2013.load_split(split)
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=x, y=y)
    return x, y


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Flips, small rotations and shifts (one affine warp), brightness/contrast jitter. x: [B,1,48,48]."""
    b = len(x)
    angle = (torch.rand(b, generator=g) - 0.5) * math.radians(20)
    scale = 1 + (torch.rand(b, generator=g) - 0.5) * 0.2
    flip = torch.where(torch.rand(b, generator=g) < 0.5, -1.0, 1.0)
    shift = (torch.rand(b, 2, generator=g) - 0.5) * 0.2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1).to(x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    contrast = 1 + (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.4
    bright = (torch.rand(b, 1, 1, 1, generator=g) - 0.5) * 0.4
    return x * contrast.to(x.device) + bright.to(x.device)


@torch.inference_mode()
def predict(model: FaceCNN, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([torch.softmax(model(x[i : i + batch].to(device))["logits"], -1).cpu() for i in range(0, len(x), batch)]).numpy()


def train_one(
    x: torch.Tensor, y: torch.Tensor, cfg: FaceConfig, epochs: int, seed: int, batch: int = 128, log=print, device: str = "cpu"
) -> FaceCNN:
    """Augmentation draws from a CPU generator, so a seed gives the same batches on any device."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = FaceCNN(cfg).to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=5e-4)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.2)
    for epoch in progress.steps(range(epochs), f"face CNN, seed {seed}: epochs"):
        model.train()
        order = torch.randperm(len(x), generator=g)
        total = 0.0
        for i in range(0, len(order), batch):
            idx = order[i : i + batch].to(device)
            loss = F.cross_entropy(model(augment(x[idx], g))["logits"], y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += float(loss.detach()) * len(idx)
        log(f"  seed {seed} epoch {epoch + 1}: train loss {total / len(x):.3f}")
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[3]
    p = argparse.ArgumentParser(prog="merc train vision", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--out", type=Path, default=root / "model_repository" / "face_encoder" / "1")
    p.add_argument("--report", type=Path, default=root / "bench" / "results" / "vision_fer2013.md")
    p.add_argument("--cache", type=Path, default=root / ".cache")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu (deterministic, the default) or cuda")
    p.add_argument("--channels", default=None, help="conv widths, comma-separated (default: the config's)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()

    x_train, y_train = cached_split("train", args.cache)
    x_val, y_val = cached_split("publictest", args.cache)
    xt, xv = FaceCNN.normalise(torch.from_numpy(x_train)), FaceCNN.normalise(torch.from_numpy(x_val))
    yt = torch.from_numpy(y_train)
    print(f"train {len(xt)} faces / publictest {len(xv)} faces")
    cfg = FaceConfig(channels=tuple(int(c) for c in args.channels.split(","))) if args.channels else FaceConfig()
    rows, shipped = [], None
    for seed in range(args.seeds):
        model = train_one(xt, yt, cfg, args.epochs, seed, device=args.device)
        s = metrics.summary(y_val, predict(model, xv).argmax(1), len(LABELS))
        rows.append(s)
        shipped = shipped or model.cpu()
        print(f"  seed {seed}: publictest weighted F1 {s['weighted_f1']:.4f}, macro F1 {s['macro_f1']:.4f}, accuracy {s['accuracy']:.4f}")

    version = save_model(args.out, shipped, cfg.to_dict(), "face-cnn")

    write_report(
        args.report,
        "Facial-expression CNN on FER2013",
        "merc train vision",
        argv,
        started,
        args.threads,
        relative(args.out, root),
        version,
        f"Data: FER2013 train ({len(xt)} faces) for training, publictest ({len(xv)}) for the figures; "
        f"fixed schedule of {args.epochs} epochs, last epoch reported. Augmentation: flips, ±10° rotations, "
        "±10% scale and shifts, brightness/contrast.",
        rows,
        "publictest",
        args.device,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
