"""The fusion network's examples: MELD dialogues with voice and face paired by label, or a user's recordings.

Shared by the trainer (``merc train fusion``) and by ``merc eval``, which must measure the shipped
model on exactly the dev pairing the trainer reported, without importing the trainer.

The pairing protocol (merc.data.pairing): the shipped audio/face encoders' embeddings of items they
never trained on, RAVDESS actors 17-18 and one half of FER2013 publictest for training, actors
19-20 and the other half for development, so no clip or face is on both sides.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from merc.data import fer2013, pairing, ravdess
from merc.data.meld import Dialogue, holdout_split, load_split
from merc.media import quality
from merc.models import tiers
from merc.models.context_model import ContextModel, Observation, window_indices
from merc.models.encoders import AudioEmotionEncoder, FaceEmotionEncoder
from merc.models.text_encoder import TextEncoder, normalise_text
from merc.pipeline import calibration as cal
from merc.pipeline import text_context, text_shift
from merc.pipeline.labels import MODALITIES
from merc.runtime.config import settings

if TYPE_CHECKING:
    from merc.training.fusion import FusionTrainConfig

VALIDATION_FRACTION = 0.10
VALIDATION_SEED = 0  # the same held-out train dialogues as the text adapter's
FIT_ACTORS, DEV_ACTORS = frozenset({17, 18}), frozenset({19, 20})
POOL_FOLDS = ("fold0", "fold1")  # the training pools split in two (load_data), each the other's unseen voices and faces
DEV_PAIRING_SEED = 1234  # one fixed dev pairing, so seeds, patterns and `merc eval` are compared on the same items
DEV_HALVINGS = 10  # random halvings of dev that the calibration figures are cross-fitted over (dev_halves)
# The protocol's defaults, here so that `merc eval` pairs dev as training did (FusionTrainConfig starts from them).
P_PRESENT = (0.8, 0.5, 0.5)  # modality dropout: text, audio, vision
P_CLEAN = 0.5  # otherwise a random corruption variant


@dataclass
class Split:
    """MELD dialogues as flat arrays, a dialogue's utterances contiguous and in order."""

    text: np.ndarray  # [N, the tier's size] adapted text embeddings
    text_quality: np.ndarray  # [N, quality.DIM], text fields only
    speaker: np.ndarray
    emotion: np.ndarray
    sentiment: np.ndarray
    lengths: list[int]

    def rows(self, dialogues) -> np.ndarray:
        off = np.concatenate([[0], np.cumsum(self.lengths)])
        return np.concatenate([np.arange(off[d], off[d + 1]) for d in dialogues])


@dataclass
class Paired:
    """A split with voice and face drawn for every utterance, and a modality mask."""

    split: Split
    audio: np.ndarray
    vision: np.ndarray
    audio_quality: np.ndarray
    vision_quality: np.ndarray
    mask: np.ndarray

    def with_mask(self, mask: np.ndarray) -> Paired:
        return Paired(self.split, self.audio, self.vision, self.audio_quality, self.vision_quality, mask)

    def observation(self, rows: np.ndarray) -> Observation:
        m = self.mask[rows]
        q = self.split.text_quality[rows] * m[:, :1] + self.audio_quality[rows] * m[:, 1:2] + self.vision_quality[rows] * m[:, 2:]
        t = lambda a, k: torch.from_numpy(np.ascontiguousarray(a[rows] * m[:, k : k + 1], dtype=np.float32))
        return Observation(t(self.split.text, 0), t(self.audio, 1), t(self.vision, 2), torch.from_numpy(m),
                           torch.from_numpy(q.astype(np.float32)))


def concat(a: Paired, b: Paired) -> Paired:
    s, t = a.split, b.split
    split = Split(*(np.concatenate([getattr(s, f), getattr(t, f)]) for f in ("text", "text_quality", "speaker", "emotion", "sentiment")),
                  s.lengths + t.lengths)
    return Paired(split, *(np.concatenate([getattr(a, f), getattr(b, f)]) for f in ("audio", "vision", "audio_quality", "vision_quality", "mask")))


def standalone(pool: pairing.Pool, modality: str, n: int, rng: np.random.Generator | None, cfg: FusionTrainConfig) -> Paired:
    """n one-utterance conversations of one modality, labels as the pool has them (no MELD prior).

    Without ``rng``: every item of the pool once, clean (for measuring)."""
    if rng is None:
        items, variant = np.arange(len(pool.labels)), np.zeros(len(pool.labels), np.int64)
        n = len(items)
    else:
        items = rng.integers(len(pool.labels), size=n)
        variant = np.where(rng.random(n) < cfg.p_clean, 0, rng.integers(1, len(pool.variants), n))
    c = cfg.model
    vectors = {"audio": np.zeros((n, c.audio_dim), np.float32), "vision": np.zeros((n, c.vision_dim), np.float32)}
    qualities = {m: np.zeros((n, quality.DIM), np.float32) for m in vectors}
    vectors[modality], qualities[modality] = pool.embedding[variant, items], pool.quality[variant, items]
    split = Split(np.zeros((n, c.text_dim), np.float32), np.zeros((n, quality.DIM), np.float32), np.zeros(n, np.int64),
                  pool.labels[items], np.full(n, -1), [1] * n)
    return Paired(split, vectors["audio"], vectors["vision"], qualities["audio"], qualities["vision"],
                  pairing.pattern_mask(n, (modality,)))


def pair(split: Split, audio: pairing.Pool, vision: pairing.Pool, rng: np.random.Generator,
         p_clean: float, p_present: tuple[float, float, float]) -> Paired:
    a, aq = audio.draw(split.emotion, rng, p_clean)
    v, vq = vision.draw(split.emotion, rng, p_clean)
    return Paired(split, a, v, aq, vq, pairing.sample_masks(len(split.emotion), rng, p_present))


# ---------------------------------------------------------------------------- loading


def _contexts(dialogues: list[Dialogue]) -> tuple[list[str], list[str]]:
    """Each utterance and the conversation before it, as the text plug-in hands them to the model when serving."""
    limit = settings().max_text_chars
    texts, contexts = [], []
    for d in dialogues:
        turns = [(u.speaker, u.text) for u in d.utterances]
        for (_, said), context in zip(turns, text_context.dialogue_contexts(turns), strict=True):
            text, context = text_context.encoder_inputs(said, context, limit)
            texts.append(text)
            contexts.append(context)
    return texts, contexts


def embed_text(dialogues: list[Dialogue], encoder: TextEncoder, cache: Path) -> np.ndarray:
    texts, contexts = _contexts(dialogues)
    h = hashlib.sha256(f"{encoder.version}|{encoder.max_length}|".encode())
    for t, c in zip(texts, contexts, strict=True):
        h.update(t.encode() + b"\x00" + c.encode() + b"\x01")
    path = cache / f"text-{h.hexdigest()[:16]}.npy"
    if not path.is_file():
        cache.mkdir(parents=True, exist_ok=True)
        np.save(path, encoder.encode(texts, contexts))
    return np.load(path)


def to_split(dialogues: list[Dialogue], vectors: np.ndarray) -> Split:
    utts = [u for d in dialogues for u in d.utterances]
    tq = np.stack([quality.features({"text_length": quality.text_length(len(normalise_text(u.text)))}) for u in utts])
    return Split(vectors, tq, np.array([u.speaker_index for u in utts]), np.array([u.emotion for u in utts]),
                 np.array([u.sentiment for u in utts]), [len(d) for d in dialogues])


@dataclass
class Data:
    fit: Split
    val: Split
    dev: Split
    audio_head: torch.nn.Linear
    vision_head: torch.nn.Linear
    encoders: dict
    # The pairing protocol: {audio,vision}_{fit,dev} pools drawn from by label.
    pools: dict[str, pairing.Pool] | None = None
    # A user's labelled manifest: voice and face as recorded, per split.
    recorded: dict[str, Paired] | None = None

    def draw(self, part: str, rng: np.random.Generator, cfg: FusionTrainConfig, pools: str = "fit") -> Paired:
        """The examples of "fit" (redrawn every epoch) or "val"; dev is drawn once, by ``dev_pairing``.

        ``pools``: which voices and faces they borrow, "fit" or one of its POOL_FOLDS."""
        if self.recorded is not None:
            real = self.recorded[part]
            if part != "fit":
                return real
            return real.with_mask(pairing.drop_modalities(real.mask, rng, cfg.p_present))
        paired = pair(getattr(self, part), self.pools[f"audio_{pools}"], self.pools[f"vision_{pools}"], rng, cfg.p_clean, cfg.p_present)
        if part == "fit" and cfg.standalone > 0:
            n = int(cfg.standalone * len(paired.mask) / 2)
            for m in ("audio", "vision"):
                paired = concat(paired, standalone(self.pools[f"{m}_{pools}"], m, n, rng, cfg))
        return paired


def load_data(repository: Path, cache: Path, log=print, tier: str = tiers.DEFAULT) -> Data:
    text = TextEncoder.from_repository(tiers.folder(repository / "text_encoder" / "1", tier))
    audio = AudioEmotionEncoder(repository / "audio_encoder" / "1")
    face = FaceEmotionEncoder(repository / "face_encoder" / "1")
    fit_d, val_d = holdout_split(load_split("train"), VALIDATION_FRACTION, VALIDATION_SEED)
    dev_d = load_split("dev")
    t0 = time.time()
    splits = [to_split(d, embed_text(d, text, cache)) for d in (fit_d, val_d, dev_d)]
    log(f"  text embeddings ready ({time.time() - t0:.0f}s, {text.version})")
    clips = [c for c in ravdess.load_clips() if c.actor in FIT_ACTORS | DEV_ACTORS]
    apool, actors = pairing.audio_pool(clips, audio, cache)
    log(f"  voice pool: {len(clips)} clips x {len(pairing.AUDIO_VARIANTS)} variants ({time.time() - t0:.0f}s)")
    x, y = fer2013.load_split("publictest")
    fpool = pairing.face_pool(x, y, face, cache)
    half = np.random.default_rng(0).permutation(len(y)) < len(y) // 2
    log(f"  face pool: {len(y)} crops x {len(pairing.FACE_VARIANTS)} variants ({time.time() - t0:.0f}s)")
    fit_a = np.isin(actors, list(FIT_ACTORS))
    pools = {"audio_fit": apool.subset(np.flatnonzero(fit_a)), "audio_dev": apool.subset(np.flatnonzero(~fit_a)),
             "vision_fit": fpool.subset(np.flatnonzero(half)), "vision_dev": fpool.subset(np.flatnonzero(~half))}
    pools.update(fold_pools(apool, actors, fpool, np.flatnonzero(half)))
    return Data(*splits, audio.model.head, face.model.head,
                {"text_encoder": text.version, "audio_encoder": audio.version, "face_encoder": face.version}, pools=pools)


def fold_pools(audio: pairing.Pool, actors: np.ndarray, vision: pairing.Pool, fit_faces: np.ndarray) -> dict[str, pairing.Pool]:
    """The training pools in POOL_FOLDS: one fit actor and half the fit faces each, so that each fold's
    voices and faces are ones a fusion trained on the other has not seen (merc.training.fusion.choose_epochs)."""
    faces = np.random.default_rng(1).permutation(fit_faces)
    out = {}
    for i, (name, actor) in enumerate(zip(POOL_FOLDS, sorted(FIT_ACTORS), strict=True)):
        out[f"audio_{name}"] = audio.subset(np.flatnonzero(actors == actor))
        out[f"vision_{name}"] = vision.subset(np.sort(faces[i :: len(POOL_FOLDS)]))
    return out


def _recorded_parts(rec, conversations: list[int]) -> Paired:
    off = np.concatenate([[0], np.cumsum(rec.lengths)])
    rows = np.concatenate([np.arange(off[c], off[c + 1]) for c in conversations])
    split = Split(rec.vectors["text"][rows], rec.quality["text"][rows], rec.speaker[rows], rec.emotion[rows],
                  np.full(len(rows), -1), [rec.lengths[c] for c in conversations])
    return Paired(split, rec.vectors["audio"][rows], rec.vectors["vision"][rows], rec.quality["audio"][rows],
                  rec.quality["vision"][rows], rec.mask[rows])


def load_recorded(repository: Path, train: Path, dev: Path, log=print) -> Data:
    """Data from a user's labelled manifests: train (10 % of its conversations held out) and dev."""
    from merc.data import labelled
    from merc.inference.local import LocalInference
    from merc.pipeline.modalities import PLUGINS
    from merc.runtime.config import Settings

    inference = LocalInference(str(repository), torch.get_num_threads())
    settings = Settings(inference="local")
    plugins = {m: cls(inference, settings) for m, cls in PLUGINS.items()}
    dims = {m: inference.input_shapes("fusion")[m.upper()][0] for m in MODALITIES}
    parts = {}
    for name, path in (("train", train), ("dev", dev)):
        rec = labelled.encode(path, plugins, dims)
        log(f"  {path}: {len(rec.emotion)} utterances in {len(rec.lengths)} conversations, {len(rec.skipped)} lines skipped")
        for reason in rec.skipped[:5]:
            log(f"    {reason}")
        parts[name] = rec
    order = np.random.default_rng(VALIDATION_SEED).permutation(len(parts["train"].lengths))
    n_val = max(1, round(VALIDATION_FRACTION * len(order)))
    recorded = {"fit": _recorded_parts(parts["train"], sorted(order[n_val:].tolist())),
                "val": _recorded_parts(parts["train"], sorted(order[:n_val].tolist())),
                "dev": _recorded_parts(parts["dev"], list(range(len(parts["dev"].lengths))))}
    audio = AudioEmotionEncoder(repository / "audio_encoder" / "1")
    face = FaceEmotionEncoder(repository / "face_encoder" / "1")
    versions = {"text_encoder": inference.version("text_encoder"), "audio_encoder": audio.version, "face_encoder": face.version}
    return Data(recorded["fit"].split, recorded["val"].split, recorded["dev"].split, audio.model.head, face.model.head,
                versions, recorded=recorded)


# ---------------------------------------------------------------------------- development data


def dev_pairing(data: Data, p_clean: float = P_CLEAN, p_present: tuple[float, float, float] = P_PRESENT) -> Paired:
    """Dev with voices and faces from the dev pools, always the same draw (a user's recordings as they are)."""
    if data.recorded is not None:
        return data.recorded["dev"]
    rng = np.random.default_rng(DEV_PAIRING_SEED)
    return pair(data.dev, data.pools["audio_dev"], data.pools["vision_dev"], rng, p_clean, p_present)


def dev_halves(lengths: list[int], r: int) -> list[np.ndarray]:
    """Random halving r of the dev dialogues, as row indices (calibration is cross-fitted over these)."""
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    perm = np.random.default_rng(1000 + r).permutation(len(lengths))
    return [np.concatenate([np.arange(offsets[i], offsets[i + 1]) for i in part])
            for part in (perm[: len(perm) // 2], perm[len(perm) // 2 :])]


# ---------------------------------------------------------------------------- the network over them


def run(model: ContextModel, paired: Paired, dialogues=None) -> tuple[dict, np.ndarray]:
    split = paired.split
    if dialogues is None:
        dialogues = range(len(split.lengths))
    dialogues = list(dialogues)
    rows = split.rows(dialogues)
    window = window_indices([split.lengths[d] for d in dialogues], model.cfg.context)
    return model.forward_dialogues(paired.observation(rows), torch.from_numpy(split.speaker[rows]), window), rows


@torch.no_grad()
def predict(model: ContextModel, paired: Paired) -> dict[str, np.ndarray]:
    model.eval()
    out = run(model, paired)[0]
    return {k: v.double().numpy() for k, v in out.items() if k in ("logits", "sentiment_logits", "expert_logits", "weights")}


def evaluate_patterns(model: ContextModel, dev: Paired) -> dict[str, dict]:
    """Every modality subset on the same dev pairing: logits and expert posteriors per pattern."""
    out = {}
    for pattern in pairing.PATTERNS:
        p = predict(model, dev.with_mask(pairing.pattern_mask(len(dev.split.emotion), pattern)))
        out["+".join(pattern)] = p
    return out


def fit_experts_on_patterns(out: dict[str, dict], y: np.ndarray) -> dict:
    """Each expert's temperature (merc.pipeline.calibration.fit_experts) over ``evaluate_patterns``' outputs."""
    keys = list(out)
    mask = np.concatenate([np.tile([[float(m in k.split("+")) for m in MODALITIES]], (len(y), 1)) for k in keys])
    return cal.fit_experts(np.concatenate([out[k]["expert_logits"] for k in keys]), mask, np.tile(y, len(keys)))


def fit_text_shift(data: Data) -> text_shift.TextShift | None:
    """Where text stops resembling the fusion's training text (merc.pipeline.text_shift): the Gaussian from the fit
    split, the ramp from dev, which the calibration is fitted on too. None when too little text was recorded."""
    if data.recorded is None:
        return text_shift.fit(data.fit.text, data.dev.text, data.encoders["text_encoder"])
    fit, dev = (data.recorded[part] for part in ("fit", "dev"))
    try:
        return text_shift.fit(fit.split.text[fit.mask[:, 0] > 0.5], dev.split.text[dev.mask[:, 0] > 0.5],
                              data.encoders["text_encoder"])
    except ValueError:
        return None
