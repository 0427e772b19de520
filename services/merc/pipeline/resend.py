"""A re-sent utterance: each of its modalities is analysed once.

An utterance id (tenant, conversation, sequence) names one moment of a conversation, and its event
stands for the content first analysed for each modality. A re-send may still add a modality its
stored result lacks (the event gets a revision, as it does for a modality that arrives late), but
a modality already analysed is not analysed again: new content under an old id would otherwise be
answered OK and silently ignored, its stored result standing for words it never saw. A re-send with
nothing new is refused (ALREADY_EXISTS) with the reason; changed content is a new utterance, under a
new sequence number. For a client retrying an UNAVAILABLE, ALREADY_EXISTS means an earlier attempt
got through.

The check reads stored results: a re-send that arrives before the first one's event is stored meets
fusion's join instead, which drops a second copy of a modality as a duplicate.
"""

from __future__ import annotations

from collections.abc import Iterable

from merc.pipeline.results import UtteranceResult


def analysed(stored: UtteranceResult | None, given: Iterable[str]) -> list[str]:
    """The given modalities that the utterance's stored result already stands for."""
    return [] if stored is None else [m for m in given if m in stored.modalities]


def refusal(stored: UtteranceResult) -> str:
    """Why a re-send with nothing new is refused, and what to do instead."""
    return (f"utterance {stored.sequence} of conversation {stored.conversation_id!r} was analysed already "
            f"({', '.join(stored.modalities)}; revision {stored.revision}) and each modality is analysed once: "
            "send changed content as a new utterance (another sequence number); GetConversation has this one's result")
