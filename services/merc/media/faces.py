"""Faces in video frames: detection (BlazeFace), crop and resize to the expression model's input.

The detector is MediaPipe's BlazeFace short-range network (``detector/``: the weights, their licence
and provenance), run by OpenCV's DNN module; mediapipe itself pins protobuf<5, which the platform's
gRPC stubs cannot share. It replaced OpenCV's Haar cascade: on FER2013's held-out faces set into
frames, the cascade missed 25 % and BlazeFace 2.3 %, in the same time per frame
(bench/results/face_detection.md).

The network sees a 128x128 letterboxed square and is made for faces near the camera, so a small face
in a large frame is too few pixels for it. A frame is therefore read whole first, and only if no face
is found there, again in overlapping square tiles of ``TILE`` times its shorter side; the most
confident of the network's 896 anchors over all of it is the face. Its box is widened by ``MARGIN``
and raised by ``RAISE`` to FER2013's framing and resized to the face CNN's 48x48, and its score (0..1)
is the frame's weight when frames are pooled.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SIZE = 48  # the face CNN's input
WEIGHTS = Path(__file__).parent / "detector" / "face_detection_short_range.tflite"
INPUT = 128  # the network's square input
MIN_SCORE = 0.5  # MediaPipe's own threshold for this model
# BlazeFace's box runs from the brows to the chin; FER2013's crops show a little more, and more of the
# forehead. All three chosen on FER2013 train faces set into frames (bench/face_detection.py): the margin
# and the upward shift (of the box's side) by overlap with where the face was put, the tile as the
# largest (fewest tiles) that finds as many faces as the smaller ones.
MARGIN = 0.1
RAISE = 0.1
TILE = 0.6
MAX_TILES_PER_SIDE = 4
# The anchors: one per cell of a 16x16 grid (stride 8) twice over, then of an 8x8 grid (stride 16)
# six times over, each at its cell's centre; the network regresses boxes relative to them, in pixels
# of the 128x128 input.
_GRIDS = ((16, 2), (8, 6))
_ANCHORS = np.concatenate([np.repeat(np.stack(np.meshgrid((np.arange(g) + 0.5) / g, (np.arange(g) + 0.5) / g), -1)
                                     .reshape(-1, 2), n, axis=0) for g, n in _GRIDS])


@dataclass
class Face:
    crop: np.ndarray  # uint8 [SIZE, SIZE]
    score: float  # 0..1


# One network per thread: an OpenCV Net holds its buffers and is not safe to run from two threads at once.
_local = threading.local()


def _net():
    net = getattr(_local, "net", None)
    if net is None:
        import cv2

        if not WEIGHTS.is_file():
            raise RuntimeError(f"the face detector's weights are missing ({WEIGHTS}); reinstall merc")
        net = _local.net = cv2.dnn.readNetFromTFLite(str(WEIGHTS))
    return net


def resize(grey: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(grey).resize((SIZE, SIZE), Image.BILINEAR))


def _score(grey: np.ndarray) -> tuple[float, float, float, float, float]:
    """The best anchor of one frame or tile: (score, centre x, centre y, width, height) in its pixels."""
    import cv2

    h, w = grey.shape
    side = max(h, w)
    # Letterboxed, centred: the network sees the whole of it, undistorted.
    square = np.zeros((side, side), np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    square[top : top + h, left : left + w] = grey
    rgb = cv2.cvtColor(cv2.resize(square, (INPUT, INPUT), interpolation=cv2.INTER_AREA), cv2.COLOR_GRAY2RGB)
    net = _net()
    net.setInput(cv2.dnn.blobFromImage(rgb.astype(np.float32) / 127.5 - 1.0))
    scores, boxes = net.forward(["classificators", "regressors"])
    scores = 1.0 / (1.0 + np.exp(-np.clip(scores.reshape(-1), -80.0, 80.0)))
    best = int(np.argmax(scores))
    dx, dy, bw, bh = boxes.reshape(-1, 16)[best, :4] / INPUT
    cx, cy = (_ANCHORS[best] + (dx, dy)) * side - (left, top)
    return float(scores[best]), float(cx), float(cy), float(bw * side), float(bh * side)


def _starts(length: int, tile: int) -> list[int]:
    """Tile offsets along one side: half a tile apart, but never more than MAX_TILES_PER_SIDE of them, so an
    odd frame (a thin strip the pixel limit allows) costs at most that many squared network runs."""
    n = min(MAX_TILES_PER_SIDE, math.ceil((length - tile) / max(1, tile // 2)) + 1)
    return sorted({int(round(v)) for v in np.linspace(0, length - tile, n)})


def best_box(grey: np.ndarray, tile: float = TILE) -> tuple[float, float, float, float, float] | None:
    """The most confident face of a greyscale frame as (score, centre x, centre y, width, height) in the
    frame's pixels, or None when nothing reaches MIN_SCORE, whole or in tiles of ``tile`` x its shorter side."""
    found = _score(grey)
    if found[0] >= MIN_SCORE:
        return found
    h, w = grey.shape
    side = int(min(h, w) * tile)
    if side < INPUT // 2:  # tiles would be upscaled: nothing the whole frame did not show
        return None
    for y in _starts(h, side):
        for x in _starts(w, side):
            score, cx, cy, bw, bh = _score(grey[y : y + side, x : x + side])
            if score > found[0]:
                found = (score, cx + x, cy + y, bw, bh)
    return found if found[0] >= MIN_SCORE else None


def detect(grey: np.ndarray) -> Face | None:
    """The most confident face of a greyscale frame, cropped as FER2013's faces are, or None."""
    found = best_box(grey)
    return None if found is None else crop(grey, found)


def crop_box(found: tuple[float, float, float, float, float], margin: float = MARGIN,
             raised: float = RAISE) -> tuple[float, float, float, float]:
    """The square (x0, y0, x1, y1) a best_box is cropped to: widened by ``margin`` and raised by ``raised``
    (of the box's side) to FER2013's framing, not yet cut at the frame's edges."""
    _, cx, cy, bw, bh = found
    side = max(bw, bh)
    half, cy = side * (1.0 + 2 * margin) / 2, cy - raised * side
    return cx - half, cy - half, cx + half, cy + half


def crop(grey: np.ndarray, found: tuple[float, float, float, float, float]) -> Face | None:
    """A best_box found in ``grey`` as the face CNN's input: its crop_box, cut at the frame's edges."""
    left, top, right, bottom = crop_box(found)
    h, w = grey.shape
    x0, x1 = int(round(max(0.0, left))), int(round(min(float(w), right)))
    y0, y1 = int(round(max(0.0, top))), int(round(min(float(h), bottom)))
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    return Face(resize(grey[y0:y1, x0:x1]), found[0])
