"""From joined utterances to calibrated results: context window -> fusion model -> mood.

The fusion model (Triton or in-process) does the maths, calibration and
conformal set included; this module assembles its inputs from the join and the
causal context, and turns its outputs into stored results.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from datetime import UTC, datetime

import numpy as np

from merc.inference import InferenceClient
from merc.media import quality
from merc.pipeline import mood
from merc.pipeline.context import ContextCache, Window
from merc.pipeline.events import event_id
from merc.pipeline.join import Release
from merc.pipeline.labels import LABELS, MODALITIES, SENTIMENTS
from merc.pipeline.results import UtteranceResult

FUSION_MODEL = "fusion"

log = logging.getLogger(__name__)


class EmotionPredictor:
    def __init__(self, inference: InferenceClient, context: ContextCache, mood_decay: float, k: int, hidden: int) -> None:
        self.inference = inference
        self.context = context
        self.mood_decay = mood_decay
        self.k = k
        self.hidden = hidden
        self.version = inference.version(FUSION_MODEL)
        shapes = inference.input_shapes(FUSION_MODEL)
        self.dims = {m: shapes[m.upper()][0] for m in MODALITIES}  # vector size the model takes per modality

    def predict(self, releases: list[Release], now_ms: int | None = None) -> list[UtteranceResult]:
        """Results in the order of `releases`.

        An utterance's context includes the result of its predecessor, so a
        conversation's releases go in successive model calls ("waves"); the
        waves batch across conversations.
        """
        by_conv: dict[tuple[str, str], list[int]] = defaultdict(list)
        for i, r in enumerate(releases):
            ref = r.entry.ref
            by_conv[(ref.tenant, ref.conversation_id)].append(i)
        results: list[UtteranceResult | None] = [None] * len(releases)
        depth = max((len(v) for v in by_conv.values()), default=0)
        for wave in range(depth):
            idx = [v[wave] for v in by_conv.values() if len(v) > wave]
            for i, result in zip(idx, self._predict_batch([releases[i] for i in idx], now_ms), strict=True):
                results[i] = result
                self.context.put(result)
        return [r for r in results if r is not None]

    def _predict_batch(self, releases: list[Release], now_ms: int | None) -> list[UtteranceResult]:
        inputs, windows = self._inputs(releases)
        out = self.inference.infer(FUSION_MODEL, inputs)
        now_ms = now_ms if now_ms is not None else int(time.time() * 1000)
        emitted_at = datetime.fromtimestamp(now_ms / 1000, UTC)
        return [self._result(r, w, {name: value[i] for name, value in out.items()}, inputs["MODALITY_MASK"][i], now_ms, emitted_at)
                for i, (r, w) in enumerate(zip(releases, windows, strict=True))]

    def _inputs(self, releases: list[Release]) -> tuple[dict[str, np.ndarray], list[Window]]:
        """The fusion model's batch (names and shapes of its config.pbtxt) and each utterance's context window."""
        n, k = len(releases), self.k
        vectors = {m: np.zeros((n, d), np.float32) for m, d in self.dims.items()}
        quality_in = np.zeros((n, quality.DIM), np.float32)
        mask = np.zeros((n, len(MODALITIES)), np.float32)
        speaker = np.zeros((n, 1), np.int64)
        ctx_fused = np.zeros((n, k, self.hidden), np.float32)
        ctx_speaker = np.zeros((n, k), np.int64)
        ctx_valid = np.zeros((n, k), np.float32)
        windows = []
        for i, r in enumerate(releases):
            ref = r.entry.ref
            for j, m in enumerate(MODALITIES):
                e = r.entry.embeddings.get(m)
                if e is None:
                    continue
                vec = np.asarray(e.vector, np.float32)
                if len(vec) != vectors[m].shape[1]:
                    # An encoder/fusion version mismatch: using it would be silently wrong.
                    log.warning("ignoring %s embedding of length %d (the fusion model takes %d)", m, len(vec), vectors[m].shape[1])
                    continue
                vectors[m][i] = vec
                mask[i, j] = 1.0
                # Each encoder fills only its own QualitySignals fields, so the sum is the merge.
                quality_in[i] += quality.features(e.quality)
            w = self.context.window(ref.tenant, ref.conversation_id, ref.sequence, ref.speaker)
            windows.append(w)
            speaker[i, 0] = w.speaker_index
            # Right-aligned: the last slot holds the immediately preceding utterance.
            for j, (row, spk) in enumerate(zip(w.previous, w.speaker_indices, strict=True)):
                slot = k - len(w.previous) + j
                ctx_fused[i, slot] = row.fused
                ctx_speaker[i, slot] = spk
                ctx_valid[i, slot] = 1.0
        inputs = {"TEXT": vectors["text"], "AUDIO": vectors["audio"], "VISION": vectors["vision"], "MODALITY_MASK": mask,
                  "QUALITY": quality_in, "SPEAKER": speaker, "CTX_FUSED": ctx_fused, "CTX_SPEAKER": ctx_speaker, "CTX_VALID": ctx_valid}
        return inputs, windows

    def _result(self, r: Release, w: Window, out: dict[str, np.ndarray], mask: np.ndarray, now_ms: int, emitted_at: datetime) -> UtteranceResult:
        """One utterance's result from its row of the model's outputs, its moods carried on from its predecessor."""
        ref = r.entry.ref
        probs = out["PROBS"].astype(np.float64)
        probs = probs / probs.sum()
        top = int(np.argmax(probs))
        sentiment = out["SENTIMENT"].astype(np.float64)
        used = [m for m in MODALITIES if m in r.entry.embeddings and mask[MODALITIES.index(m)] > 0]
        weights = out["WEIGHTS"]
        previous = w.previous[-1] if w.previous else None
        # The row keeps its own speaker's mood only: a row per speaker's mood would grow with the square of the speakers.
        own = self.context.speaker_mood(ref.tenant, ref.conversation_id, ref.sequence, ref.speaker)
        moods = {ref.speaker: mood.update(own, probs, self.mood_decay)}
        conversation_mood = mood.update(previous.conversation_mood if previous else None, probs, self.mood_decay)
        sent_at = r.entry.sent_at_ms
        return UtteranceResult(
            tenant=ref.tenant,
            conversation_id=ref.conversation_id,
            sequence=ref.sequence,
            speaker=ref.speaker,
            speaker_index=w.speaker_index,
            start_ms=ref.start_ms,
            end_ms=ref.end_ms,
            revision=r.revision,
            event_id=event_id(ref.tenant, ref.conversation_id, ref.sequence, r.revision),
            label=LABELS[top],
            confidence=round(float(probs[top]), 6),
            probabilities=[round(float(p), 6) for p in probs],
            sentiment=SENTIMENTS[int(np.argmax(sentiment))],
            sentiment_probabilities=[round(float(p), 6) for p in sentiment],
            prediction_set=[LABELS[j] for j in np.flatnonzero(out["IN_SET"] > 0.5)],
            prediction_set_coverage=round(float(out["COVERAGE"][0]), 4),
            modalities=used,
            weights=[round(float(weights[MODALITIES.index(m)]), 6) for m in used],
            missing=list(r.missing),
            degraded=bool(r.missing),
            incongruence=round(float(out["INCONGRUENCE"][0]), 6),
            # To the hundredth: it explains a confidence, and finer it would be one more fingerprint of the words.
            text_shift=round(float(out["TEXT_SHIFT"][0]), 2) if "TEXT_SHIFT" in out else 0.0,
            posteriors={m: [round(float(p), 6) for p in out["EXPERT_PROBS"][MODALITIES.index(m)]] for m in used},
            fused=out["FUSED"].astype(np.float32),
            speaker_moods=moods,
            conversation_mood=conversation_mood,
            model_version=self.version,
            # A caller's clock is not ours to trust: out of range means unknown (0).
            latency_ms=now_ms - sent_at if sent_at and 0 <= now_ms - sent_at < 2**31 else 0,
            emitted_at=emitted_at,
        )
