"""Embedded mode: the whole pipeline in one process, no servers.

The same encoder plug-ins, join, context, fusion model and store code as the
services, wired to an in-process bus, in-process inference and SQLite.
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from merc import manifest, segment, video
from merc.bus.memory import MemoryBus
from merc.config import Settings
from merc.context_text import ContextMemory
from merc.encoder.encoding import Encoder
from merc.encoder.plugins import PLUGINS, InvalidInput
from merc.fusion.processor import FusionProcessor
from merc.inference.local import LocalInference
from merc.join import MODALITY_ENUMS
from merc.labels import LABELS
from merc.media import SAMPLE_RATE, MediaError
from merc.store import Store
from merc.v1 import common_pb2, encoder_pb2, events_pb2

log = logging.getLogger(__name__)


@dataclass
class LineResult:
    """One manifest line's outcome: its event (if any modality could be used) and what went wrong."""

    utterance: manifest.Utterance | None
    event: events_pb2.EmotionEvent | None = None
    errors: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    line: int = 0

    def to_json(self) -> dict:
        u = self.utterance
        out: dict = {"conversation": u.conversation, "utterance": u.utterance, "speaker": u.speaker} if u else {"line": self.line}
        if self.event is None:
            out.update(label=None, error="; ".join(self.errors))
            return out
        e = self.event
        names = [MODALITY_NAMES[m] for m in e.modalities]
        out.update(
            label=e.label,
            probs={name: round(float(p), 6) for name, p in zip(LABELS, e.probabilities, strict=True)},
            confidence=round(float(e.confidence), 6),
            prediction_set=list(e.prediction_set),
            sentiment=e.sentiment,
            modalities=names,
            weights={n: round(float(w), 6) for n, w in zip(names, e.modality_weights, strict=True)},
            degraded=bool(e.degraded or self.errors),
            incongruence=round(float(e.incongruence), 6),
            mood={"speaker": _mood(e.speaker_mood), "conversation": _mood(e.conversation_mood)},
            revision=e.revision,
        )
        if self.errors:
            out["errors"] = self.errors
        if self.notes:
            out["notes"] = self.notes
        return out


MODALITY_NAMES = {v: k for k, v in MODALITY_ENUMS.items()}


def _mood(m: events_pb2.SpeakerMood) -> dict:
    return {
        "probs": {name: round(float(p), 6) for name, p in zip(LABELS, m.probabilities, strict=False)},
        "valence": round(float(m.valence), 6),
        "arousal": round(float(m.arousal), 6),
        "emotion_shifts": m.emotion_shifts,
        "utterances": m.utterances,
    }


def request_for(u: manifest.Utterance, tenant: str, context_text: str) -> encoder_pb2.EncodeRequest:
    ref = common_pb2.UtteranceRef(
        tenant=tenant,
        conversation_id=u.conversation,
        sequence=u.utterance,
        speaker=u.speaker,
        start_ms=u.start_ms or 0,
        end_ms=u.end_ms or 0,
    )
    return encoder_pb2.EncodeRequest(utterance=ref, text=u.text or "", context_text=context_text,
                                     sent_at_ms=int(time.time() * 1000))


class NotInFile(Exception):
    """The line's media file has no stream for this modality (a silent video, an audio-only file)."""


def attach_media(u: manifest.Utterance, request, modality: str, frames: int = 5, max_pixels: int = 4096 * 4096) -> None:
    """Attach the line's media for one modality to an encoder or gateway request.

    Files are sent as they are; a ``video`` is cut to the line's span here and re-packed as raw
    16 kHz PCM and ``frames`` PNG frames, so the services validate one kind of input. Raw bytes
    stay in this process.
    """
    try:
        if modality == "audio" and u.audio is not None:
            request.audio.data = u.audio.read_bytes()
        elif modality == "audio" and u.video is not None:
            wave = video.audio_span(u.video, u.start_ms, u.end_ms)
            if wave is None:
                raise NotInFile(f"{u.video.name} has no audio track")
            request.audio.CopyFrom(encoder_pb2.Audio(data=wave.astype("<f4").tobytes(), encoding="pcm_f32le",
                                                     sample_rate=SAMPLE_RATE, channels=1))
        elif modality == "vision" and (u.frames or u.faces):
            request.frames.extend(encoder_pb2.Image(data=p.read_bytes()) for p in u.frames)
            request.faces.extend(encoder_pb2.Image(data=p.read_bytes()) for p in u.faces)
        elif modality == "vision" and u.video is not None:
            images = video.frames_span(u.video, u.start_ms, u.end_ms, frames, max_pixels)
            if not images:
                raise NotInFile(f"{u.video.name} has no video frames in this span")
            request.frames.extend(encoder_pb2.Image(data=png(img)) for img in images)
    except OSError as e:
        raise InvalidInput(f"cannot read {modality} file: {e.filename}: {e.strerror}") from None
    except MediaError as e:
        raise InvalidInput(str(e)) from None


def png(image) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise MediaError("cannot re-encode a video frame")
    return buf.tobytes()


class EmbeddedPipeline:
    def __init__(self, settings: Settings | None = None, db_path: str | None = None) -> None:
        self.settings = settings or Settings(inference="local")
        self._tmp = None
        if db_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="merc-")
            db_path = str(Path(self._tmp.name) / "merc.db")
        self.store = Store(f"sqlite:///{db_path}")
        self.store.migrate()
        self.bus = MemoryBus()
        self.inference = LocalInference(self.settings.model_repository, self.settings.torch_threads)
        producer = self.bus.producer()
        self.encoders = {
            name: Encoder(cls(self.inference, self.settings), producer, self.settings.topic(f"embeddings.{name}"), self.settings.tenant,
                          self.settings.pseudonym_secret)
            for name, cls in PLUGINS.items()
        }
        self.fusion = FusionProcessor(self.bus, self.store, self.inference, self.settings)
        self.fusion.open()
        self._events = self.bus.consumer(_events_spec(self.settings.topic("emotions")))
        # The last utterances per conversation: the text encoder's context. Memory only.
        self._recent = ContextMemory()

    def analyze_line(self, u: manifest.Utterance) -> LineResult:
        result = LineResult(u)
        embeddings = []
        for modality in u.given:
            encoder = self.encoders.get(modality)
            if encoder is None:
                result.errors.append(f"line {u.line}: {modality} given but no {modality} encoder is available in this build")
                continue
            request = request_for(u, self.settings.tenant, self._recent.context(u.conversation, u.speaker))
            try:
                attach_media(u, request, modality, self.settings.video_frames, self.settings.max_image_pixels)
                embeddings.append((encoder, encoder.embed(request)))
            except NotInFile as e:
                result.notes.append(f"line {u.line}: {modality}: {e}")
            except InvalidInput as e:
                result.errors.append(f"line {u.line}: {modality}: {e}")
        if "text" in u.given:
            self._recent.remember(u.conversation, u.speaker, u.text)
        if not embeddings:
            if not u.given:
                result.errors.append(f"line {u.line}: no text, audio, frames, faces or video")
            elif not result.errors:
                result.errors.append(f"line {u.line}: nothing usable in it ({'; '.join(result.notes)})")
            return result
        # Encoding is synchronous here, so the join need wait only for what was encoded.
        expected = [e.modality for _, e in embeddings]
        for encoder, embedding in embeddings:
            del embedding.expected_modalities[:]
            embedding.expected_modalities.extend(expected)
            encoder.publish(embedding)
        # Everything is in memory, so one step emits it; a few more are a safety margin.
        for _ in range(5):
            self.fusion.step(poll_ms=0)
            for m in self._events.poll(timeout_ms=0):
                if m.value is None:  # an erasure tombstone
                    continue
                event = events_pb2.EmotionEvent.FromString(m.value)
                if event.utterance.conversation_id == u.conversation and event.utterance.sequence == u.utterance:
                    result.event = event
            if result.event is not None:
                return result
        result.errors.append(f"line {u.line}: no event: utterance {u.utterance} of {u.conversation!r} was already analysed")
        return result

    def analyze(self, path: str | Path) -> Iterator[LineResult]:
        """A manifest's lines, or a bare audio/video file's utterances (segmented by voice activity)."""
        for item in segment.read(path):
            if isinstance(item, manifest.ManifestError):
                yield LineResult(None, errors=[str(item)], line=item.line)
            else:
                yield self.analyze_line(item)

    def close(self) -> None:
        self.fusion.close()
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def _events_spec(topic: str):
    from merc.bus.base import ConsumerSpec

    return ConsumerSpec([topic], group_id=None)
