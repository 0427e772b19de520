"""Train the facial-expression CNN on FER2013 `train`; report on `publictest`.

    merc train vision [--seeds 3] [--epochs 40] [--device cuda] [--jobs 3] [--out model_repository/face_encoder/1]

A fixed schedule (one-cycle over --epochs), last epoch reported: publictest
never chooses an epoch or a seed.

CPU (the default) is deterministic but slow for these widths; `--device cuda` runs the
same code in minutes (in bfloat16), and a seed draws the same batches on either (its generator
lives on the CPU). A GPU is mostly idle with one of these small models, so `--jobs` trains
that many seeds at once, each in its own process.
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from merc import progress
from merc.data import fer2013
from merc.evaluation import metrics
from merc.models.face_cnn import FaceCNN, FaceConfig
from merc.pipeline.labels import LABELS
from merc.training.artifacts import mean_std, relative, save_model, write_report


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
    """Flips, small rotations and shifts (one affine warp), brightness/contrast jitter, and one erased
    rectangle in half the faces (a hand or a shadow over part of the face). x: [B,1,48,48]."""
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
    x = x * contrast.to(x.device) + bright.to(x.device)
    return erase(x, g)


def erase(x: torch.Tensor, g: torch.Generator, p: float = 0.5, area: tuple[float, float] = (0.02, 0.2)) -> torch.Tensor:
    """Zero (the normalised mean) one random rectangle of 2-20% of the image in a fraction p of x."""
    b, _, h, w = x.shape
    frac = area[0] + torch.rand(b, generator=g) * (area[1] - area[0])
    aspect = torch.exp((torch.rand(b, generator=g) - 0.5) * 2 * math.log(2))
    eh = (torch.sqrt(frac * aspect) * h).clamp(1, h)
    ew = (torch.sqrt(frac / aspect) * w).clamp(1, w)
    top = torch.rand(b, generator=g) * (h - eh)
    left = torch.rand(b, generator=g) * (w - ew)
    on = torch.rand(b, generator=g) < p
    rows, cols = torch.arange(h)[None, :], torch.arange(w)[None, :]
    in_rows = (rows >= top[:, None]) & (rows < (top + eh)[:, None])
    in_cols = (cols >= left[:, None]) & (cols < (left + ew)[:, None])
    mask = (in_rows[:, :, None] & in_cols[:, None, :] & on[:, None, None])[:, None].to(x.device)
    return x.masked_fill(mask, 0.0)


@torch.inference_mode()
def predict(model: FaceCNN, x: torch.Tensor, batch: int = 512) -> np.ndarray:
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([torch.softmax(model(x[i : i + batch].to(device))["logits"], -1).cpu() for i in range(0, len(x), batch)]).numpy()


def train_one(
    x: torch.Tensor, y: torch.Tensor, cfg: FaceConfig, epochs: int, seed: int, batch: int = 128, log=print,
    device: str = "cpu", lr: float = 3e-3,
) -> FaceCNN:
    """Augmentation draws from a CPU generator, so a seed gives the same batches on any device."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    model = FaceCNN(cfg).to(device)
    x, y = x.to(device), y.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps = epochs * math.ceil(len(x) / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.2)
    # bfloat16 where the hardware has it: same recipe, several times the speed; CPU stays float32.
    cuda = torch.device(device).type == "cuda"
    layout = torch.channels_last if cuda else torch.contiguous_format
    if cuda:
        torch.backends.cudnn.benchmark = True
        model = model.to(memory_format=layout)
    for epoch in progress.steps(range(epochs), f"face CNN, seed {seed}: epochs"):
        model.train()
        order = torch.randperm(len(x), generator=g)
        total = torch.zeros((), device=device)  # summed on the device: reading it each step would stall a GPU
        for i in range(0, len(order), batch):
            idx = order[i : i + batch].to(device)
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
                logits = model(augment(x[idx], g).contiguous(memory_format=layout))["logits"]
                loss = F.cross_entropy(logits.float(), y[idx], label_smoothing=0.1)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * len(idx)
        if (epoch + 1) % 10 == 0 or epoch + 1 == epochs:
            log(f"  seed {seed} epoch {epoch + 1}: train loss {float(total) / len(x):.3f}")
    return model.to(memory_format=torch.contiguous_format).eval()


def evaluate(model: FaceCNN, xv: torch.Tensor, yv: np.ndarray) -> tuple[dict, dict]:
    """publictest figures without and with the mirrored view averaged in (the model keeps its setting)."""
    shipped_setting, out = model.cfg.flip_average, []
    for flip in (False, True):
        model.cfg.flip_average = flip
        out.append(metrics.summary(yv, predict(model, xv).argmax(1), len(LABELS)))
    model.cfg.flip_average = shipped_setting
    return out[0], out[1]


def run_seed(job: tuple) -> tuple[dict, dict, dict]:
    """One seed from start to figures, in a worker process: (CPU state dict, plain figures, flip-averaged figures)."""
    cache, cfg, epochs, seed, batch, lr, device, threads = job
    torch.set_num_threads(threads)
    xt, yt, xv, yv = load(cache)
    model = train_one(xt, yt, cfg, epochs, seed, batch=batch, device=device, lr=lr)
    plain, flipped = evaluate(model, xv, yv)
    return {k: v.cpu() for k, v in model.state_dict().items()}, plain, flipped


def load(cache: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, np.ndarray]:
    x_train, y_train = cached_split("train", cache)
    x_val, y_val = cached_split("publictest", cache)
    return FaceCNN.normalise(torch.from_numpy(x_train)), torch.from_numpy(y_train), FaceCNN.normalise(torch.from_numpy(x_val)), y_val


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
    p.add_argument("--jobs", type=int, default=1, help="seeds trained at once, each in its own process")
    p.add_argument("--channels", default=None, help="conv widths, comma-separated (default: the config's)")
    p.add_argument("--convs", type=int, default=FaceConfig.convs, help="3x3 convs per stage")
    p.add_argument("--flip-average", action="store_true", help="ship the model averaging each face with its mirror image")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    started = time.time()

    xt, _, xv, _ = load(args.cache)
    print(f"train {len(xt)} faces / publictest {len(xv)} faces")
    cfg = FaceConfig(convs=args.convs, flip_average=args.flip_average)
    if args.channels:
        cfg.channels = tuple(int(c) for c in args.channels.split(","))
    jobs = [(args.cache, cfg, args.epochs, seed, args.batch, args.lr, args.device, args.threads) for seed in range(args.seeds)]
    if args.jobs > 1:
        # spawn: CUDA cannot be used in a forked child.
        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(pool.map(run_seed, jobs))
    else:
        results = [run_seed(job) for job in jobs]
    rows, flipped = [], []
    for seed, (_, plain, mirrored) in enumerate(results):
        rows.append(mirrored if cfg.flip_average else plain)
        flipped.append(mirrored)
        print(f"  seed {seed}: publictest weighted F1 {plain['weighted_f1']:.4f} (with the mirror image {mirrored['weighted_f1']:.4f}), "
              f"accuracy {plain['accuracy']:.4f} ({mirrored['accuracy']:.4f})")
    shipped = FaceCNN(cfg)
    shipped.load_state_dict(results[0][0])
    shipped.eval()
    plain_rows = [r[1] for r in results]

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
        f"fixed schedule of {args.epochs} epochs, last epoch reported. Model: widths {'-'.join(map(str, cfg.channels))}, "
        f"{cfg.convs} convs per stage, {sum(p.numel() for p in shipped.parameters()) / 1e6:.2f} M parameters. Augmentation: flips, "
        "±10° rotations, ±10% scale and shifts, brightness/contrast, an erased rectangle in half the faces.\n\n"
        + mirror_line(plain_rows, flipped, cfg.flip_average),
        rows,
        "publictest",
        args.device,
    )
    return 0


def mirror_line(plain: list[dict], mirrored: list[dict], shipped_mirrored: bool) -> str:
    return (f"Each face alone: weighted F1 {mean_std(plain, 'weighted_f1')}, accuracy {mean_std(plain, 'accuracy')}. "
            f"Averaged with its mirror image: weighted F1 {mean_std(mirrored, 'weighted_f1')}, accuracy {mean_std(mirrored, 'accuracy')}. "
            f"The table below is the shipped setting ({'averaged with the mirror image' if shipped_mirrored else 'each face alone'}).")


if __name__ == "__main__":
    sys.exit(main())
