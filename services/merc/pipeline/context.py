"""Causal dialogue context: the last K results of a conversation, each speaker's first appearance and mood.

Derived from the stored per-utterance rows, cached in memory for the conversations this instance
owns (the last 4K rows of each; fusion forgets a conversation with its idle join state).
Everything is keyed by sequence number and reads only rows *before* the utterance at hand, so a
replay after a crash sees exactly the context the first attempt saw.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Protocol

from merc.pipeline.results import UtteranceResult


class History(Protocol):
    """The stored results the context is rebuilt from (merc.store.Store in every process)."""

    def before(self, tenant: str, conversation_id: str, sequence: int | None, limit: int) -> list[UtteranceResult]: ...

    def speaker_before(self, tenant: str, conversation_id: str, speaker: str, sequence: int) -> UtteranceResult | None: ...

    def first_appearances(self, tenant: str, conversation_id: str) -> dict[str, int]: ...


MOODS_KEPT = 1024  # speakers per conversation whose latest mood stays in memory; older ones are read back


def _own_mood(row: UtteranceResult) -> dict | None:
    # Rows keep their own speaker's mood only (rows written before that kept every speaker's).
    return row.speaker_moods.get(row.speaker)


@dataclass
class _Conversation:
    rows: dict[int, UtteranceResult] = field(default_factory=dict)
    # speaker -> sequence of first appearance
    first_seen: dict[str, int] = field(default_factory=dict)
    # highest sequence dropped from `rows` to bound memory; -1 when none
    trimmed_upto: int = -1
    # speaker -> (sequence, mood) of their latest result put here: the rows of one step reach the
    # store only when it commits, so a speaker's mood must outlive the trimming of `rows`.
    moods: OrderedDict[str, tuple[int, dict]] = field(default_factory=OrderedDict)


@dataclass
class Window:
    previous: list[UtteranceResult]  # oldest first, at most K
    speaker_index: int  # order of first appearance of the current speaker
    speaker_indices: list[int]  # for each row of `previous`


class ContextCache:
    def __init__(self, store: History, k: int) -> None:
        self.store = store
        self.k = k
        self._kept = k * 4  # a margin beyond K so revisions of recent utterances still find their context
        self._conversations: dict[tuple[str, str], _Conversation] = {}

    def _load(self, tenant: str, conversation_id: str) -> _Conversation:
        key = (tenant, conversation_id)
        conv = self._conversations.get(key)
        if conv is None:
            conv = _Conversation(first_seen=self.store.first_appearances(tenant, conversation_id))
            for row in self.store.before(tenant, conversation_id, None, self._kept):
                conv.rows[row.sequence] = row
            if len(conv.rows) == self._kept:  # older rows may exist: windows reaching them ask the store
                conv.trimmed_upto = min(conv.rows) - 1
            self._conversations[key] = conv
        return conv

    def _trim(self, conv: _Conversation) -> None:
        for seq in sorted(conv.rows)[: -self._kept]:
            del conv.rows[seq]
            conv.trimmed_upto = max(conv.trimmed_upto, seq)

    def window(self, tenant: str, conversation_id: str, sequence: int, speaker: str) -> Window:
        conv = self._load(tenant, conversation_id)
        before = [conv.rows[s] for s in sorted(conv.rows) if s < sequence][-self.k :]
        if len(before) < self.k and conv.trimmed_upto >= 0:
            # Part of the window was trimmed from memory (a revision of an old utterance).
            before = self.store.before(tenant, conversation_id, sequence, self.k)
        order = sorted((s, name) for name, s in conv.first_seen.items() if s < sequence)
        index = {name: i for i, (_, name) in enumerate(order)}
        current = index.get(speaker, len(index))
        return Window(before, current, [index.get(r.speaker, r.speaker_index) for r in before])

    def speaker_mood(self, tenant: str, conversation_id: str, sequence: int, speaker: str) -> dict | None:
        """The speaker's mood after their last utterance before ``sequence``; None before their first."""
        conv = self._load(tenant, conversation_id)
        for seq in sorted((s for s in conv.rows if s < sequence), reverse=True):
            if conv.rows[seq].speaker == speaker:
                return _own_mood(conv.rows[seq])
        latest = conv.moods.get(speaker)
        if latest is not None and latest[0] < sequence:
            return latest[1]
        first = conv.first_seen.get(speaker)
        if first is None or first >= sequence or conv.trimmed_upto < 0:
            return None
        row = self.store.speaker_before(tenant, conversation_id, speaker, sequence)
        return _own_mood(row) if row is not None else None

    def put(self, result: UtteranceResult) -> None:
        conv = self._load(result.tenant, result.conversation_id)
        conv.rows[result.sequence] = result
        latest = conv.moods.get(result.speaker)
        if latest is None or latest[0] <= result.sequence:
            conv.moods[result.speaker] = (result.sequence, _own_mood(result))
            conv.moods.move_to_end(result.speaker)
            if len(conv.moods) > MOODS_KEPT:
                conv.moods.popitem(last=False)
        seen = conv.first_seen.get(result.speaker)
        if seen is None or result.sequence < seen:
            conv.first_seen[result.speaker] = result.sequence
        self._trim(conv)

    def clear(self) -> None:
        self._conversations.clear()

    def forget(self, tenant: str, conversation_id: str) -> None:
        self._conversations.pop((tenant, conversation_id), None)

    def __len__(self) -> int:
        return len(self._conversations)
