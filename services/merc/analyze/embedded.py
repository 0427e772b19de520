"""Embedded mode: the whole pipeline in one process, no servers.

The same encoder plug-ins, join, context, fusion model and store code as the
services, wired to an in-process bus, in-process inference and SQLite.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from merc.analyze import manifest, segment, timeline
from merc.analyze.requests import NotInFile, attach_media, encode_request
from merc.bus import topics
from merc.bus.base import ConsumerSpec
from merc.bus.memory import MemoryBus
from merc.inference import InferenceClient
from merc.inference.local import LocalInference
from merc.pipeline import resend
from merc.pipeline.encoder import Encoder
from merc.pipeline.events import to_event
from merc.pipeline.fusion import FusionProcessor
from merc.pipeline.modalities import PLUGINS, InvalidInput
from merc.pipeline.text_context import ContextMemory
from merc.runtime.config import Settings
from merc.runtime.sealing import Sealing
from merc.store import Store
from merc.v1 import events_pb2

log = logging.getLogger(__name__)

# A line whose utterance was analysed before (a --db kept from an earlier run, a gateway's store).
STORED_NOTE = ("no new event: this utterance was analysed before and each modality is analysed once (changed content "
               "needs a new utterance number); showing the stored result")

ANALYZE_FIELDS = ("label", "probs", "confidence", "prediction_set", "sentiment", "modalities", "weights", "degraded",
                  "incongruence", "text_shift", "mood", "revision", "posteriors")


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
        # The timeline's fields (merc.analyze.timeline), in the order `merc analyze --json` has always printed them.
        event = timeline.event_json(self.event)
        out.update({name: event[name] for name in ANALYZE_FIELDS})
        out["degraded"] = bool(self.event.degraded or self.errors)
        if self.errors:
            out["errors"] = self.errors
        if self.notes:
            out["notes"] = self.notes
        return out



def repeated(u: manifest.Utterance, first_line: int) -> str:
    """A manifest naming one utterance twice: the second line is an error of its own (the first one is analysed)."""
    return f"line {u.line}: utterance {u.utterance} of {u.conversation!r} is on line {first_line} already"


class EmbeddedPipeline:
    def __init__(self, settings: Settings | None = None, db_path: str | None = None, inference: InferenceClient | None = None) -> None:
        """``inference``: the models in-process from the model repository unless given."""
        self.settings = settings or Settings(inference="local")
        self._tmp = None
        if db_path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="merc-")
            db_path = str(Path(self._tmp.name) / "merc.db")
        self.store = Store(f"sqlite:///{db_path}")
        self.store.migrate()
        self.bus = MemoryBus()
        self.inference = inference or LocalInference(self.settings.model_repository, self.settings.torch_threads,
                                                       self.settings.text_tier)
        producer = self.bus.producer()
        self.encoders = {
            name: Encoder(cls(self.inference, self.settings), producer, self.settings.topic(topics.embeddings(name)), self.settings.tenant,
                          self.settings.pseudonym_secret, Sealing.parse(self.settings.embedding_keys))
            for name, cls in PLUGINS.items()
        }
        self.fusion = FusionProcessor(self.bus, self.store, self.inference, self.settings)
        self.fusion.open()
        self._events = self.bus.consumer(ConsumerSpec([self.settings.topic(topics.EMOTIONS)], group_id=None))
        # The last utterances per conversation: the text encoder's context. Memory only.
        self._recent = ContextMemory()

    def analyze_line(self, u: manifest.Utterance) -> LineResult:
        result = LineResult(u)
        embeddings = []
        context = self._recent.next(u.conversation, u.speaker, u.text or "")
        # As the gateway does (merc.pipeline.resend): what the stored result stands for is not analysed again.
        stored = self.store.result(self.settings.tenant, u.conversation, u.utterance)
        if resend.nothing_new(stored, u.given):
            result.event = to_event(stored)
            result.notes.append(STORED_NOTE)
            return result
        for modality in u.given:
            encoder = self.encoders.get(modality)
            if encoder is None:
                result.errors.append(f"line {u.line}: {modality} given but no {modality} encoder is available in this build")
                continue
            request = encode_request(u, self.settings.tenant, context)
            try:
                attach_media(u, request, modality, self.settings)
                embeddings.append((encoder, encoder.embed(request)))
            except NotInFile as e:
                result.notes.append(f"line {u.line}: {modality}: {e}")
            except InvalidInput as e:
                result.errors.append(f"line {u.line}: {modality}: {e}")
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

    def analyze(self, path: str | Path, base: Path | None = None, speakers: int | None = None) -> Iterator[LineResult]:
        """A manifest's lines (media relative to ``base``, by default its folder), or a bare audio/video
        file's utterances (segmented by voice activity; ``speakers`` people, when known)."""
        lines: dict[tuple[str, int], int] = {}
        for item in segment.read(path, self.settings.max_recording_seconds, base=base, speakers=speakers):
            if isinstance(item, manifest.ManifestError):
                yield LineResult(None, errors=[str(item)], line=item.line)
                continue
            first = lines.setdefault((item.conversation, item.utterance), item.line)
            if first != item.line:
                yield LineResult(item, errors=[repeated(item, first)])
                continue
            try:
                result = self.analyze_line(item)
            except Exception as e:  # a bug one line trips must not cost the lines after it
                result = unexpected(item, e)
            yield result

    def close(self) -> None:
        self.fusion.close()
        self.store.close()
        if self._tmp is not None:
            self._tmp.cleanup()


def unexpected(u: manifest.Utterance, e: Exception) -> LineResult:
    """The line's result when analysing it raised what no check foresaw: its error, and the traceback in the log."""
    log.error("line %d: unexpected error", u.line, exc_info=e)
    return LineResult(u, errors=[f"line {u.line}: unexpected error: {type(e).__name__}: {e}"])
