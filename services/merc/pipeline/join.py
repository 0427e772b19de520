"""The per-utterance join: wait for every expected modality, up to a wall-clock deadline.

An utterance is released when all its expected modalities have arrived, or at
first_arrival + window (wall clock, so a modality that never comes cannot stall
anything). Within a conversation, utterances are released in sequence order:
one waits for a pending predecessor's release. A modality that arrives after
release yields a revision when revisions are on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from merc.v1 import common_pb2, events_pb2, state_pb2

MODALITY_NAMES = {
    common_pb2.MODALITY_TEXT: "text",
    common_pb2.MODALITY_AUDIO: "audio",
    common_pb2.MODALITY_VISION: "vision",
}
MODALITY_ENUMS = {name: enum for enum, name in MODALITY_NAMES.items()}

# Released utterances kept per conversation, for revisions and duplicate suppression.
KEEP_RELEASED = 16


@dataclass
class Entry:
    embeddings: dict[str, events_pb2.ModalityEmbedding]
    first_arrival_ms: int
    released: bool = False
    revision: int = 0

    @property
    def ref(self) -> common_pb2.UtteranceRef:
        return next(iter(self.embeddings.values())).utterance

    @property
    def expected(self) -> set[str]:
        names: set[str] = set()
        for e in self.embeddings.values():
            names |= {MODALITY_NAMES[m] for m in e.expected_modalities if m in MODALITY_NAMES}
        return names or set(self.embeddings)

    @property
    def complete(self) -> bool:
        return self.expected <= set(self.embeddings)

    @property
    def sent_at_ms(self) -> int:
        return min((e.sent_at_ms for e in self.embeddings.values() if e.sent_at_ms), default=0)


@dataclass
class Release:
    """An utterance ready for fusion: its embeddings, revision and the modalities it lacks."""

    entry: Entry
    revision: int
    missing: list[str]
    outcome: str  # complete | deadline | revision


@dataclass
class Conversation:
    entries: dict[int, Entry] = field(default_factory=dict)
    dirty: bool = False
    last_activity_ms: int = 0


class Join:
    def __init__(self, window_ms: int, emit_revisions: bool = True) -> None:
        self.window_ms = window_ms
        self.emit_revisions = emit_revisions
        self._conversations: dict[tuple[str, str], Conversation] = {}

    def add(self, embedding: events_pb2.ModalityEmbedding, now_ms: int) -> str:
        """Take one embedding; returns what happened: pending, duplicate, late, dropped."""
        ref = embedding.utterance
        name = MODALITY_NAMES.get(embedding.modality)
        if name is None:
            raise ValueError(f"embedding for {ref.conversation_id}#{ref.sequence} has no modality")
        conv = self._conversations.setdefault((ref.tenant, ref.conversation_id), Conversation())
        conv.last_activity_ms = now_ms
        entry = conv.entries.get(ref.sequence)
        if entry is None:
            if conv.entries and ref.sequence < min(conv.entries) and len(conv.entries) >= KEEP_RELEASED:
                return "dropped"  # older than anything we still remember
            conv.entries[ref.sequence] = Entry({name: embedding}, now_ms)
            conv.dirty = True
            return "pending"
        if name in entry.embeddings:
            return "duplicate"
        entry.embeddings[name] = embedding
        conv.dirty = True
        if entry.released:
            if not self.emit_revisions:
                return "dropped"
            entry.released = False
            entry.revision += 1
            return "late"
        return "pending"

    def release(self, now_ms: int) -> list[Release]:
        """Utterances due now, in sequence order per conversation."""
        out: list[Release] = []
        for conv in self._conversations.values():
            for seq in sorted(conv.entries):
                entry = conv.entries[seq]
                if entry.released:
                    continue
                if entry.revision > 0:
                    outcome = "revision"
                elif entry.complete:
                    outcome = "complete"
                elif now_ms >= entry.first_arrival_ms + self.window_ms:
                    outcome = "deadline"
                else:
                    break  # later utterances wait for this one
                entry.released = True
                conv.dirty = True
                missing = sorted(entry.expected - set(entry.embeddings))
                out.append(Release(entry, entry.revision, missing, outcome))
            released = [s for s in sorted(conv.entries) if conv.entries[s].released]
            for seq in released[:-KEEP_RELEASED]:
                del conv.entries[seq]
        return out

    def next_deadline_ms(self) -> int | None:
        deadlines = [
            e.first_arrival_ms + self.window_ms
            for conv in self._conversations.values()
            for e in conv.entries.values()
            if not e.released
        ]
        return min(deadlines, default=None)

    # --- durable state (the fusion service writes it to a compacted topic) ---

    def dirty_states(self, now_ms: int) -> dict[tuple[str, str], state_pb2.ConversationJoinState]:
        """Snapshots of the conversations changed since the last call."""
        out = {}
        for key, conv in self._conversations.items():
            if conv.dirty:
                out[key] = self.snapshot(key, now_ms)
                conv.dirty = False
        return out

    def snapshot(self, key: tuple[str, str], now_ms: int) -> state_pb2.ConversationJoinState:
        conv = self._conversations[key]
        state = state_pb2.ConversationJoinState(updated_at_ms=now_ms)
        for seq in sorted(conv.entries):
            e = conv.entries[seq]
            state.entries.add(
                embeddings=list(e.embeddings.values()),
                first_arrival_ms=e.first_arrival_ms,
                emitted=e.released,
                revision=e.revision,
            )
        return state

    def restore(self, key: tuple[str, str], state: state_pb2.ConversationJoinState) -> None:
        conv = Conversation(last_activity_ms=state.updated_at_ms)
        for e in state.entries:
            embeddings = {MODALITY_NAMES[m.modality]: m for m in e.embeddings}
            if embeddings:
                seq = next(iter(embeddings.values())).utterance.sequence
                conv.entries[seq] = Entry(embeddings, e.first_arrival_ms, e.emitted, e.revision)
        self._conversations[key] = conv

    def clear(self) -> None:
        """Forget everything (before restoring the state of newly assigned partitions)."""
        self._conversations.clear()

    def forget(self, key: tuple[str, str]) -> bool:
        """Drop one conversation's state, pending utterances included (erasure); whether it was held."""
        return self._conversations.pop(key, None) is not None

    def idle(self, now_ms: int, idle_ms: int) -> list[tuple[str, str]]:
        """Conversations with nothing pending and no activity for idle_ms: removed, keys returned."""
        gone = [
            k
            for k, c in self._conversations.items()
            if now_ms - c.last_activity_ms > idle_ms and all(e.released for e in c.entries.values())
        ]
        for k in gone:
            del self._conversations[k]
        return gone
