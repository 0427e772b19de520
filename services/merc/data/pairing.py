"""Paired multimodal examples without a paired corpus (ARCHITECTURE.md, "Models").

No aligned text/voice/face dialogue corpus is reachable here, so MELD dialogues (real text,
real conversational context) get, per utterance and by label, a voice clip from RAVDESS and a
face from FER2013 that their encoders never trained on (held-out actors, the publictest
split), under corruption and modality dropout. The pools hold encoder embeddings per
corruption variant, so pairing is a table look-up and can be redrawn every epoch.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image, ImageFilter

from merc.media import quality
from merc.models.encoders import AudioEmotionEncoder, FaceEmotionEncoder
from merc.pipeline.labels import LABELS, MODALITIES

AUDIO_VARIANTS = ("clean", "noise 20 dB", "noise 10 dB", "noise 5 dB", "noise 0 dB", "clipped")
FACE_VARIANTS = ("clean", "blur", "heavy blur", "occluded", "dark")


@dataclass
class Pool:
    """One modality's held-out items: embeddings and quality vectors per corruption variant."""

    embedding: np.ndarray  # [V, N, D] float32
    quality: np.ndarray  # [V, N, quality.DIM] float32
    labels: np.ndarray  # [N]
    variants: tuple[str, ...]

    def subset(self, rows: np.ndarray) -> Pool:
        return Pool(self.embedding[:, rows], self.quality[:, rows], self.labels[rows], self.variants)

    def draw(self, labels: np.ndarray, rng: np.random.Generator, p_clean: float,
             variant: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """For each wanted label, a random item of that label in a random variant (clean with p_clean),
        or in the given variant."""
        by_label = [np.flatnonzero(self.labels == k) for k in range(len(LABELS))]
        missing = [LABELS[k] for k in set(labels.tolist()) if len(by_label[k]) == 0]
        if missing:
            raise ValueError(f"the pool has no item labelled {', '.join(missing)}")
        items = np.array([by_label[k][rng.integers(len(by_label[k]))] for k in labels], dtype=np.int64)
        if variant is None:
            variant = np.where(rng.random(len(labels)) < p_clean, 0, rng.integers(1, len(self.variants), len(labels)))
        return self.embedding[variant, items], self.quality[variant, items]


def add_noise(wave: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """White noise at ``snr_db`` below the wave's power, clipped to [-1, 1]."""
    power = float(np.mean(np.square(wave))) + 1e-12
    noise = rng.standard_normal(len(wave)).astype(np.float32) * np.sqrt(power / 10 ** (snr_db / 10))
    return np.clip(wave + noise, -1.0, 1.0)


def audio_variants(wave: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The AUDIO_VARIANTS of one 16 kHz clip: white noise at falling SNR, and hard clipping."""
    out = [wave]
    out += [add_noise(wave, snr, rng) for snr in (20.0, 10.0, 5.0, 0.0)]
    out.append(np.clip(wave * 10.0 / (np.abs(wave).max() + 1e-9), -1.0, 1.0))
    return out


def face_variants(face: np.ndarray, rng: np.random.Generator) -> list[np.ndarray]:
    """The FACE_VARIANTS of one 48x48 greyscale crop."""
    img = Image.fromarray(face)
    occluded = face.copy()
    y, x = rng.integers(0, 24, 2)
    occluded[y : y + 24, x : x + 24] = 128  # a hand, a mug, a microphone
    return [
        face,
        np.asarray(img.filter(ImageFilter.GaussianBlur(1.0))),
        np.asarray(img.filter(ImageFilter.GaussianBlur(2.5))),
        occluded,
        (face.astype(np.float32) * 0.35).astype(np.uint8),
    ]


def _cache_path(cache: Path, name: str, *parts: str) -> Path:
    return cache / f"pool-{name}-{hashlib.sha256('|'.join(parts).encode()).hexdigest()[:16]}.npz"


def _save(path: Path, pool: Pool, **extra) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, embedding=pool.embedding, quality=pool.quality, labels=pool.labels, **extra)


def audio_pool(clips, encoder: AudioEmotionEncoder, cache: Path) -> tuple[Pool, np.ndarray]:
    """(pool, actor per item) for RAVDESS clips, every clip in every AUDIO_VARIANT."""
    path = _cache_path(cache, "audio", encoder.version, quality.VERSION, *[c.path.name for c in clips])
    if path.is_file():
        z = np.load(path)
        return Pool(z["embedding"], z["quality"], z["labels"], AUDIO_VARIANTS), z["actors"]
    rng = np.random.default_rng(0)
    emb = np.zeros((len(AUDIO_VARIANTS), len(clips), encoder.model.cfg.embedding), np.float32)
    qual = np.zeros((len(AUDIO_VARIANTS), len(clips), quality.DIM), np.float32)
    for i, c in enumerate(clips):
        wave, _ = sf.read(io.BytesIO(c.path.read_bytes()), dtype="float32", always_2d=True)
        for v, w in enumerate(audio_variants(wave.mean(axis=1), rng)):
            out = encoder.infer({"WAVE": w[None], "LENGTH": np.array([[len(w)]])})
            emb[v, i] = out["EMBEDDING"][0]
            qual[v, i] = quality.features(quality.audio_signals(w))
    pool = Pool(emb, qual, np.array([c.label for c in clips]), AUDIO_VARIANTS)
    actors = np.array([c.actor for c in clips])
    _save(path, pool, actors=actors)
    return pool, actors


def face_pool(faces: np.ndarray, labels: np.ndarray, encoder: FaceEmotionEncoder, cache: Path) -> Pool:
    """Pool of FER2013 crops, every crop in every FACE_VARIANT (crops given: face found, score 1)."""
    path = _cache_path(cache, "face", encoder.version, quality.VERSION, str(len(faces)), hashlib.sha256(faces.tobytes()).hexdigest())
    if path.is_file():
        z = np.load(path)
        return Pool(z["embedding"], z["quality"], z["labels"], FACE_VARIANTS)
    rng = np.random.default_rng(0)
    variants = np.stack([np.stack(face_variants(f, rng)) for f in faces], 1)  # [V, N, 48, 48]
    emb = np.stack([np.concatenate([encoder.infer({"FACES": v[s : s + 512]})["EMBEDDING"]
                                    for s in range(0, len(v), 512)]) for v in variants])
    qual = np.stack([[quality.features({"face_found_ratio": 1.0, "detector_score": 1.0,
                                        "sharpness": quality.sharpness(f)}) for f in v] for v in variants])
    pool = Pool(emb.astype(np.float32), qual.astype(np.float32), np.asarray(labels), FACE_VARIANTS)
    _save(path, pool)
    return pool


def sample_masks(n: int, rng: np.random.Generator, p: tuple[float, float, float]) -> np.ndarray:
    """[n, 3] modality dropout: each modality present with its probability; never none."""
    mask = (rng.random((n, len(MODALITIES))) < np.asarray(p)).astype(np.float32)
    empty = mask.sum(1) == 0
    mask[np.flatnonzero(empty), rng.integers(0, len(MODALITIES), int(empty.sum()))] = 1.0
    return mask


def pattern_mask(n: int, pattern: tuple[str, ...]) -> np.ndarray:
    return np.tile(np.array([m in pattern for m in MODALITIES], np.float32), (n, 1))


PATTERNS: tuple[tuple[str, ...], ...] = (
    ("text",), ("audio",), ("vision",), ("text", "audio"), ("text", "vision"), ("audio", "vision"),
    ("text", "audio", "vision"),
)


def drop_modalities(mask: np.ndarray, rng: np.random.Generator, p: tuple[float, float, float]) -> np.ndarray:
    """Modality dropout over recorded data: keep each present modality with its probability, never none."""
    kept = mask * (rng.random(mask.shape) < np.asarray(p))
    for i in np.flatnonzero((kept.sum(1) == 0) & (mask.sum(1) > 0)):
        kept[i, rng.choice(np.flatnonzero(mask[i] > 0))] = 1.0
    return kept.astype(np.float32)
