"""What a wider face CNN costs on CPU: ONNX Runtime time per utterance's faces, per width, with and
without the mirror-image average.

Weights do not change the cost, so each width is a freshly initialised `FaceCNN` exported the way
the served model is (`merc.models.onnx_export.export_face`), then called with a batch of
`--faces` crops (5: the frames `merc analyze` samples per utterance) on one ORT thread.
The median over `--calls` calls is reported, after three warm-up calls.

    .venv/bin/python bench/face_widths.py [--faces 5] [--calls 30]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from merc.models.face_cnn import FaceCNN, FaceConfig
from merc.models.onnx_export import export_face

WIDTHS = ((32, 64, 128, 256), (48, 96, 192, 384), (64, 128, 256, 512))


def median_ms(session: ort.InferenceSession, faces: np.ndarray, calls: int) -> float:
    name = session.get_inputs()[0].name
    for _ in range(3):
        session.run(None, {name: faces})
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        session.run(None, {name: faces})
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--faces", type=int, default=5)
    p.add_argument("--calls", type=int, default=30)
    args = p.parse_args()
    torch.manual_seed(0)
    faces = np.random.default_rng(0).integers(0, 256, (args.faces, 48, 48), dtype=np.uint8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    print(f"| widths | parameters | alone, {args.faces} faces | with the mirror image |")
    print("|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for widths in WIDTHS:
            row = []
            for mirror in (False, True):
                model = FaceCNN(FaceConfig(channels=widths, flip_average=mirror)).eval()
                path = export_face(model, Path(tmp) / f"{'-'.join(map(str, widths))}-{mirror}.onnx", "bench")
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                row.append(median_ms(session, faces, args.calls))
            params = sum(p.numel() for p in model.parameters()) / 1e6
            print(f"| {'-'.join(map(str, widths))} | {params:.2f} M | {row[0]:.1f} ms | {row[1]:.1f} ms |")


if __name__ == "__main__":
    main()
