"""What the text encoder reads besides the utterance: the conversation just before it.

One format, shared by training (``merc train text``, ``merc train fusion``) and every caller that
fills ``context_text`` (the gateway's streams, ``merc analyze`` embedded and remote): the last
``TURNS`` utterances, most recent first, each marked as said by the same or another speaker than
the utterance. Most recent first, because the tokenizer truncates a segment from its end, so the
oldest words go first. Relative marks, because the encoder must never see a name or pseudonym.
Causal: only earlier utterances.

No torch here: the gateway keeps this memory without loading a model.
"""

from __future__ import annotations

import re
import unicodedata
from collections import deque
from collections.abc import Iterable

# The shipped text adapter was trained with these (its config.json records them; the text encoder
# refuses an adapter trained otherwise, since callers format the context before it sees it).
TURNS = 3
SPEAKERS = True
SEPARATOR = " | "

# Typographic punctuation that users rarely type but transcripts (MELD) often carry.
# Mapping it to ASCII keeps training text and live text in one form for the tokenizer.
_PUNCT = str.maketrans({
    "\u2018": "'", "\u2019": "'", "\u201a": "'", "\u201b": "'",
    "\u201c": '"', "\u201d": '"', "\u201e": '"',
    "\u2013": "-", "\u2014": "-", "\u2015": "-",
    "\u2026": "...", "\u00a0": " ",
})


_SPACE = re.compile(r"\s+")


def collapse_spaces(text: str) -> str:
    """Runs of whitespace as one space: what the text encoder's request carries (text and context alike)."""
    return _SPACE.sub(" ", text).strip()


def encoder_inputs(text: str, context: str, max_chars: int) -> tuple[str, str]:
    """The text model's TEXT and CONTEXT, as the text plug-in sends them and the trainers feed them.

    The most recent turn comes first, so a context cut to ``max_chars`` loses its oldest end.
    """
    return collapse_spaces(text), collapse_spaces(context)[:max_chars]


def normalise_text(text: str) -> str:
    """The one text normalisation applied before tokenising, at training and serving time alike."""
    return unicodedata.normalize("NFC", text).translate(_PUNCT).strip()


def causal_context(history: list[tuple[bool, str]], turns: int = TURNS, speakers: bool = SPEAKERS) -> str:
    """``history``: (same speaker as the utterance?, text) of the earlier utterances, oldest first."""
    recent = [(same, normalise_text(text)) for same, text in history[-turns:][::-1]] if turns > 0 else []
    mark = (lambda same: "(same) " if same else "(other) ") if speakers else (lambda same: "")
    return SEPARATOR.join(mark(same) + text for same, text in recent if text)


class ContextMemory:
    """The last few utterances of each conversation, in memory only (never stored or published).

    ``context(conversation, speaker)`` before encoding an utterance, ``remember(...)`` after it.
    Bounded per conversation; the owner drops it with its stream or run.
    """

    def __init__(self, turns: int = TURNS, speakers: bool = SPEAKERS):
        self.turns, self.speakers = turns, speakers
        self._recent: dict[object, deque[tuple[str, str]]] = {}

    def context(self, conversation: object, speaker: str) -> str:
        recent = self._recent.get(conversation, ())
        # An unnamed speaker is nobody's "same": without labels every earlier turn reads as another's.
        return causal_context([(bool(speaker) and s == speaker, t) for s, t in recent], self.turns, self.speakers)

    def remember(self, conversation: object, speaker: str, text: str) -> None:
        if text and text.strip():
            self._recent.setdefault(conversation, deque(maxlen=max(self.turns, 1))).append((speaker, text))

    def next(self, conversation: object, speaker: str, text: str) -> str:
        """The context of this utterance, which is then remembered as the conversation's latest turn.

        The one call every caller makes per utterance, in conversation order, so training and serving
        build the same context from the same turns.
        """
        context = self.context(conversation, speaker)
        self.remember(conversation, speaker, text)
        return context

    def __contains__(self, conversation: object) -> bool:
        return conversation in self._recent


def dialogue_contexts(turns: Iterable[tuple[str, str]], turns_read: int = TURNS, speakers: bool = SPEAKERS) -> list[str]:
    """Each utterance's context for one conversation given as (speaker, text) in order (training corpora)."""
    memory = ContextMemory(turns_read, speakers)
    return [memory.next(None, speaker, text) for speaker, text in turns]
