"""FER2013 faces: 48x48 greyscale JPEGs in a folder per label, plain or inside a tar.

`train` trains; `publictest` validates (the private test split is held out and not here).
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from merc.data.meld import DataUnavailable, data_root
from merc.pipeline.labels import FER2013, label_index

SIZE = 48


def _decode(data: bytes) -> np.ndarray:
    img = Image.open(io.BytesIO(data)).convert("L")
    if img.size != (SIZE, SIZE):
        img = img.resize((SIZE, SIZE), Image.BILINEAR)
    return np.asarray(img, dtype=np.uint8)


def _label_of(parts: tuple[str, ...]) -> int | None:
    # .../<label>/<file>.jpg; unknown folder names are skipped, not guessed.
    return label_index(FER2013[parts[-2]]) if len(parts) >= 2 and parts[-2] in FER2013 else None


def load_split(split: str, root: Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 48, 48], labels int64 [N]) from `<split>.tar` or a `<split>/` folder."""
    base = (root or data_root()) / "fer2013"
    images, labels = [], []
    tar_path, folder = base / f"{split}.tar", base / split
    if tar_path.is_file():
        with tarfile.open(tar_path) as tar:
            for m in tar:
                if not m.isfile() or not m.name.lower().endswith((".jpg", ".jpeg", ".png")):
                    continue
                label = _label_of(Path(m.name).parts)
                if label is not None:
                    images.append(_decode(tar.extractfile(m).read()))
                    labels.append(label)
    elif folder.is_dir():
        for p in sorted(folder.glob("*/*")):
            label = _label_of(p.parts)
            if label is not None and p.suffix.lower() in (".jpg", ".jpeg", ".png"):
                images.append(_decode(p.read_bytes()))
                labels.append(label)
    else:
        raise DataUnavailable(f"neither {tar_path} nor {folder} found")
    return np.stack(images), np.asarray(labels, dtype=np.int64)
