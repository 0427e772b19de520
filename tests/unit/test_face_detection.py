"""Faces in frames (merc.media.faces): BlazeFace finds real faces, small ones through tiles, and nothing else."""

import hashlib
import re
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from merc.data import fer2013
from merc.media import faces


def test_the_detector_weights_are_the_ones_their_readme_names():
    readme = (faces.WEIGHTS.parent / "README.md").read_text()
    digest = hashlib.sha256(faces.WEIGHTS.read_bytes()).hexdigest()
    assert re.search(rf"Its sha256 is\s+`{digest}`", readme)
    assert "Apache License" in (faces.WEIGHTS.parent / "LICENSE").read_text()


def test_frames_without_a_face_give_none():
    rng = np.random.default_rng(0)
    frames = [np.zeros((360, 480), np.uint8), np.full((360, 480), 200, np.uint8),
              (rng.random((360, 480)) * 255).astype(np.uint8), np.tile(np.linspace(0, 255, 640), (480, 1)).astype(np.uint8),
              np.zeros((10, 10), np.uint8)]
    assert all(faces.detect(f) is None for f in frames)


def test_an_odd_frame_costs_a_bounded_number_of_network_runs(monkeypatch):
    calls = []
    monkeypatch.setattr(faces, "_score", lambda grey: calls.append(grey.shape) or (0.0, 0.0, 0.0, 1.0, 1.0))
    assert faces.best_box(np.zeros((120, 40_000), np.uint8)) is None
    assert len(calls) <= 1 + faces.MAX_TILES_PER_SIDE**2


def test_a_crop_at_the_frame_edge_is_cut_there_and_a_sliver_is_refused():
    grey = np.full((100, 100), 90, np.uint8)
    face = faces.crop(grey, (0.9, 5.0, 50.0, 40.0, 40.0))  # half of it off the left edge
    assert face.crop.shape == (faces.SIZE, faces.SIZE) and face.score == 0.9
    assert faces.crop(grey, (0.9, -30.0, 50.0, 40.0, 40.0)) is None


@pytest.fixture(scope="module")
def placed():
    """20 FER2013 publictest faces at 72 px and 20 at 180 px, each in a 360x480 frame, with where it was put."""
    try:
        crops, _ = fer2013.load_split("publictest")
    except fer2013.DataUnavailable as e:
        pytest.skip(f"FER2013 is not on this machine ({e})")
    rng = np.random.default_rng(0)
    out = []
    for i, crop in enumerate(crops[rng.permutation(len(crops))[:40]]):
        side = 72 if i < 20 else 180
        frame = cv2.GaussianBlur(rng.normal(120, 25, (360, 480)), (0, 0), 3).clip(0, 255).astype(np.uint8)
        y, x = int(rng.integers(0, 360 - side)), int(rng.integers(0, 480 - side))
        frame[y : y + side, x : x + side] = cv2.resize(crop, (side, side), interpolation=cv2.INTER_CUBIC)
        out.append((frame, (x + side / 2, y + side / 2), side))
    return out


def test_real_faces_are_found_where_they_are_small_ones_through_the_tiles(placed):
    hits, whole_frame_hits = 0, 0
    for frame, (cx, cy), side in placed:
        found = faces.best_box(frame)
        if found and abs(found[1] - cx) < side / 4 and abs(found[2] - cy) < side / 4:
            hits += 1
        if side == 72 and faces._score(frame)[0] >= faces.MIN_SCORE:
            whole_frame_hits += 1
    assert hits >= 36  # the bench measures 98 % on all of publictest
    assert whole_frame_hits <= 5  # without the tiles a 72 px face is mostly missed


def test_threads_each_get_their_own_network_and_the_same_answers(placed):
    frames = [f for f, _, _ in placed]
    serial = [faces.best_box(f) for f in frames]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(faces.best_box, frames))
    assert parallel == serial
