"""Faces in video frames: detection (OpenCV Haar cascade), crop and resize to the expression model's input.

mediapipe's detector would be better, but mediapipe 0.10.21 pins protobuf<5 while the platform's
gRPC stubs need protobuf 6, so the Haar cascade shipped inside opencv-python-headless is the
detector here. Its "confidence" is the cascade's level weight squashed to 0..1; frames are
pooled by it.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

SIZE = 48  # the face CNN's input
MARGIN = 0.1  # widen the Haar box a little: it cuts at the brows and chin, FER2013 crops do not


@dataclass
class Face:
    crop: np.ndarray  # uint8 [SIZE, SIZE]
    score: float  # 0..1


@lru_cache(maxsize=1)
def _cascade():
    import cv2

    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    if cascade.empty():
        raise RuntimeError("OpenCV's frontal-face Haar cascade could not be loaded; reinstall opencv-python-headless")
    return cascade


def resize(grey: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(grey).resize((SIZE, SIZE), Image.BILINEAR))


def detect(grey: np.ndarray) -> Face | None:
    """The most confident face of a greyscale frame, or None."""
    h, w = grey.shape
    min_side = max(24, min(h, w) // 10)
    boxes, _, weights = _cascade().detectMultiScale3(grey, scaleFactor=1.1, minNeighbors=5,
                                                     minSize=(min_side, min_side), outputRejectLevels=True)
    if len(boxes) == 0:
        return None
    best = int(np.argmax(weights))
    x, y, bw, bh = (int(v) for v in boxes[best])
    mx, my = int(bw * MARGIN), int(bh * MARGIN)
    crop = grey[max(0, y - my) : min(h, y + bh + my), max(0, x - mx) : min(w, x + bw + mx)]
    # Level weights of true faces sit roughly between 0 and 10; a logistic maps them to 0..1.
    score = float(1.0 / (1.0 + np.exp(-(float(weights[best]) - 2.0))))
    return Face(resize(crop), score)
