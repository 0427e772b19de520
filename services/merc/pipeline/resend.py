"""A re-sent utterance: what its stored result already stands for is not analysed again.

An utterance id (tenant, conversation, sequence) names one moment of a conversation, and its event
stands for the content first analysed for each modality. A re-send that brings no modality the
stored result lacks is refused (ALREADY_EXISTS) with the reason: new content under an old id would
otherwise be answered OK and silently ignored, the stored result standing for words it never saw.
Changed content is a new utterance, under a new sequence number. For a client retrying an
UNAVAILABLE, ALREADY_EXISTS means an earlier attempt got through.

A re-send that does add a modality (the camera's frames after a degraded event) goes through
whole, as before: while fusion's join remembers the utterance it drops the modalities it has as
duplicates and emits a revision with the new one; one it has forgotten is joined afresh from
everything sent, so the stored result never loses a modality it had.

The check reads stored results: a re-send that arrives before the first one's event is stored meets
fusion's join instead, which drops a second copy of a modality as a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol


class Stored(Protocol):
    """A stored result as far as this rule reads it (an UtteranceResult, or the store's Analysed)."""

    conversation_id: str
    sequence: int
    modalities: list[str]
    revision: int


def nothing_new(stored: Stored | None, given: Iterable[str]) -> bool:
    """Whether the utterance has a stored result that already stands for every given modality."""
    return stored is not None and set(given) <= set(stored.modalities)


def refusal(stored: Stored) -> str:
    """Why a re-send with nothing new is refused, and what to do instead."""
    return (f"utterance {stored.sequence} of conversation {stored.conversation_id!r} was analysed already "
            f"({', '.join(stored.modalities)}; revision {stored.revision}) and each modality is analysed once: "
            "send changed content as a new utterance (another sequence number); GetConversation has this one's result")
