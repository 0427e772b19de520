"""Diarisation error rate: the share of the reference's speech time given to no one, to the wrong speaker,
or to a speaker where no one spoke, after the best one-to-one matching of hypothesis to reference speakers.

Scored on a 10 ms grid with no forgiveness collar, speakers never overlapping (one label per frame).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import linear_sum_assignment

Turn = tuple[int, int, str]  # start_ms, end_ms, speaker


@dataclass
class DiarisationError:
    speech_ms: int = 0
    missed_ms: int = 0
    false_alarm_ms: int = 0
    confusion_ms: int = 0

    def __add__(self, other: DiarisationError) -> DiarisationError:
        return DiarisationError(self.speech_ms + other.speech_ms, self.missed_ms + other.missed_ms,
                                self.false_alarm_ms + other.false_alarm_ms, self.confusion_ms + other.confusion_ms)

    def rate(self, part: str = "all") -> float:
        errors = {"missed": self.missed_ms, "false_alarm": self.false_alarm_ms, "confusion": self.confusion_ms}
        total = sum(errors.values()) if part == "all" else errors[part]
        return total / self.speech_ms if self.speech_ms else 0.0


def _frames(turns: Sequence[Turn], n: int, names: dict[str, int], step_ms: int) -> np.ndarray:
    out = np.full(n, -1)
    for s, e, who in turns:
        out[s // step_ms : e // step_ms] = names.setdefault(who, len(names))
    return out


def score(reference: Sequence[Turn], hypothesis: Sequence[Turn], step_ms: int = 10) -> DiarisationError:
    """One recording's errors, in ms."""
    end = max((e for _, e, _ in (*reference, *hypothesis)), default=0)
    n = end // step_ms + 1
    ref_names: dict[str, int] = {}
    hyp_names: dict[str, int] = {}
    ref, hyp = _frames(reference, n, ref_names, step_ms), _frames(hypothesis, n, hyp_names, step_ms)
    both = (ref >= 0) & (hyp >= 0)
    overlap = np.zeros((len(ref_names), len(hyp_names)), dtype=np.int64)
    np.add.at(overlap, (ref[both], hyp[both]), 1)
    rows, cols = linear_sum_assignment(-overlap) if overlap.size else ([], [])
    matched = int(overlap[rows, cols].sum()) if overlap.size else 0
    return DiarisationError(
        speech_ms=int((ref >= 0).sum()) * step_ms,
        missed_ms=int(((ref >= 0) & (hyp < 0)).sum()) * step_ms,
        false_alarm_ms=int(((ref < 0) & (hyp >= 0)).sum()) * step_ms,
        confusion_ms=(int(both.sum()) - matched) * step_ms,
    )
