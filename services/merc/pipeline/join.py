"""The per-utterance join: wait for every expected modality, up to a wall-clock deadline.

An utterance is released when all its expected modalities have arrived, or at
first_arrival + window (wall clock, so a modality that never comes cannot stall
anything). Within a conversation, utterances are released in sequence order:
one waits for a pending predecessor's release. A modality that arrives after
release yields a revision when revisions are on.

Bounded whatever the traffic: at most ``max_pending`` utterances wait per conversation (one more
releases the oldest at once, outcome "overflow", degraded like a deadline), and
``KEEP_RELEASED`` released ones are remembered. A step touches only the conversations that
changed or whose deadline passed (a heap of deadlines), never a scan of all of them; idle ones
leave in order of last activity.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
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
# Utterances waiting per conversation, by default: the state record of a conversation holds them all
# (merc.pipeline.state_size bounds it under Kafka's request size).
MAX_PENDING = 64

Key = tuple[str, str]  # tenant, conversation


@dataclass
class Entry:
    embeddings: dict[str, events_pb2.ModalityEmbedding]
    first_arrival_ms: int
    released: bool = False
    revision: int = 0
    overflow: bool = False  # released early: its conversation had too many utterances waiting

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
    outcome: str  # complete | deadline | overflow | revision


@dataclass
class Conversation:
    entries: dict[int, Entry] = field(default_factory=dict)
    last_activity_ms: int = 0

    def waiting(self) -> list[int]:
        return sorted(seq for seq, e in self.entries.items() if not e.released and not e.overflow)


class Join:
    def __init__(self, window_ms: int, emit_revisions: bool = True, max_pending: int = MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.window_ms = window_ms
        self.emit_revisions = emit_revisions
        self.max_pending = max_pending
        # Least recently active first: idle() reads only the front.
        self._conversations: OrderedDict[Key, Conversation] = OrderedDict()
        self._deadlines: list[tuple[int, Key, int]] = []  # (due at, conversation, sequence), a heap; stale ones skipped
        self._touched: set[Key] = set()  # changed since the last release
        self._dirty: set[Key] = set()  # changed since the last dirty_states
        self._unordered = False  # restore() inserts out of activity order

    def add(self, embedding: events_pb2.ModalityEmbedding, now_ms: int) -> str:
        """Take one embedding; returns what happened: pending, duplicate, late, dropped."""
        ref = embedding.utterance
        name = MODALITY_NAMES.get(embedding.modality)
        if name is None:
            raise ValueError(f"embedding for {ref.conversation_id}#{ref.sequence} has no modality")
        key = (ref.tenant, ref.conversation_id)
        conv = self._conversations.get(key)
        if conv is None:
            conv = self._conversations[key] = Conversation()
        self._conversations.move_to_end(key)
        conv.last_activity_ms = now_ms
        entry = conv.entries.get(ref.sequence)
        if entry is None:
            if conv.entries and ref.sequence < min(conv.entries) and len(conv.entries) >= KEEP_RELEASED:
                return "dropped"  # older than anything we still remember
            conv.entries[ref.sequence] = Entry({name: embedding}, now_ms)
            heapq.heappush(self._deadlines, (now_ms + self.window_ms, key, ref.sequence))
            waiting = conv.waiting()
            if len(waiting) > self.max_pending:
                conv.entries[waiting[0]].overflow = True
            self._changed(key)
            return "pending"
        if name in entry.embeddings:
            return "duplicate"
        entry.embeddings[name] = embedding
        self._changed(key)
        if entry.released:
            if not self.emit_revisions:
                return "dropped"
            entry.released = False
            entry.revision += 1
            return "late"
        return "pending"

    def _changed(self, key: Key) -> None:
        self._touched.add(key)
        self._dirty.add(key)

    def release(self, now_ms: int) -> list[Release]:
        """Utterances due now, in sequence order per conversation."""
        while self._deadlines and self._deadlines[0][0] <= now_ms:
            self._touched.add(heapq.heappop(self._deadlines)[1])
        out: list[Release] = []
        touched, self._touched = self._touched, set()
        for key in sorted(touched):  # the same order at every replay
            conv = self._conversations.get(key)
            if conv is not None:
                out += self._release(key, conv, now_ms)
        return out

    def _release(self, key: Key, conv: Conversation, now_ms: int) -> list[Release]:
        out = []
        for seq in sorted(conv.entries):
            entry = conv.entries[seq]
            if entry.released:
                continue
            if entry.revision > 0:
                outcome = "revision"
            elif entry.complete:
                outcome = "complete"
            elif entry.overflow:
                outcome = "overflow"
            elif now_ms >= entry.first_arrival_ms + self.window_ms:
                outcome = "deadline"
            else:
                break  # later utterances wait for this one (its deadline is in the heap)
            entry.released = True
            self._dirty.add(key)
            missing = sorted(entry.expected - set(entry.embeddings))
            out.append(Release(entry, entry.revision, missing, outcome))
        released = [s for s in sorted(conv.entries) if conv.entries[s].released]
        for seq in released[:-KEEP_RELEASED]:
            del conv.entries[seq]
        return out

    def next_deadline_ms(self) -> int | None:
        """When release() next has something to do; stale deadlines (released, forgotten) are dropped here."""
        if self._touched:
            return 0
        while self._deadlines:
            due, key, seq = self._deadlines[0]
            conv = self._conversations.get(key)
            entry = conv.entries.get(seq) if conv else None
            if entry is not None and not entry.released:
                return due
            heapq.heappop(self._deadlines)
        return None

    def __len__(self) -> int:
        return len(self._conversations)

    # --- durable state (the fusion service writes it to a compacted topic) ---

    def dirty_states(self, now_ms: int) -> dict[Key, state_pb2.ConversationJoinState]:
        """Snapshots of the conversations changed since the last call."""
        dirty, self._dirty = self._dirty, set()
        return {key: self.snapshot(key, now_ms) for key in sorted(dirty) if key in self._conversations}

    def snapshot(self, key: Key, now_ms: int) -> state_pb2.ConversationJoinState:
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

    def restore(self, key: Key, state: state_pb2.ConversationJoinState) -> None:
        conv = Conversation(last_activity_ms=state.updated_at_ms)
        for e in state.entries:
            embeddings = {MODALITY_NAMES[m.modality]: m for m in e.embeddings}
            if embeddings:
                seq = next(iter(embeddings.values())).utterance.sequence
                conv.entries[seq] = Entry(embeddings, e.first_arrival_ms, e.emitted, e.revision)
                if not e.emitted:
                    heapq.heappush(self._deadlines, (e.first_arrival_ms + self.window_ms, key, seq))
        # A state written by an instance with a larger limit: release the excess at once.
        for seq in conv.waiting()[: -self.max_pending]:
            conv.entries[seq].overflow = True
        self._conversations[key] = conv
        self._touched.add(key)
        self._unordered = True

    def clear(self) -> None:
        """Forget everything (before restoring the state of newly assigned partitions)."""
        self._conversations.clear()
        self._deadlines.clear()
        self._touched.clear()
        self._dirty.clear()

    def forget(self, key: Key) -> bool:
        """Drop one conversation's state, pending utterances included (erasure); whether it was held."""
        self._dirty.discard(key)
        return self._conversations.pop(key, None) is not None

    def idle(self, now_ms: int, idle_ms: int) -> list[Key]:
        """Conversations with nothing pending and no activity for idle_ms: removed, keys returned.

        Reads the least recently active ones only, up to the first that is not idle."""
        if self._unordered:
            self._conversations = OrderedDict(sorted(self._conversations.items(), key=lambda kv: kv[1].last_activity_ms))
            self._unordered = False
        gone: list[Key] = []
        for _ in range(len(self._conversations)):
            key, conv = next(iter(self._conversations.items()))
            if now_ms - conv.last_activity_ms <= idle_ms:
                break
            if all(e.released for e in conv.entries.values()):
                del self._conversations[key]
                self._dirty.discard(key)
                gone.append(key)
            else:  # still waiting on a deadline: look again after the others
                self._conversations.move_to_end(key)
        return gone
