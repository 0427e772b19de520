"""Word error rate: how far a transcript is from what was said, in word edits per reference word."""

from __future__ import annotations

import re


def normalise(text: str) -> list[str]:
    """Lowercase words without punctuation: "Kids are talking, by the door." -> [kids, are, talking, by, the, door]."""
    return re.sub(r"[^\w\s']|_", " ", text.lower()).replace("'", "").split()


def edits(reference: list[str], hypothesis: list[str]) -> int:
    """Substitutions + deletions + insertions turning ``reference`` into ``hypothesis`` (Levenshtein, by words)."""
    row = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        prev, row[0] = row[0], i
        for j, hyp in enumerate(hypothesis, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ref != hyp))
    return row[-1]


def word_error_rate(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER over (reference, hypothesis) pairs: all edits over all reference words."""
    refs = [(normalise(r), normalise(h)) for r, h in pairs]
    total = sum(len(r) for r, _ in refs)
    return sum(edits(r, h) for r, h in refs) / total if total else 0.0
