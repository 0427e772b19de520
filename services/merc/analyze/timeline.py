"""A conversation's EmotionEvents as the timeline page's JSON, and the page itself.

The gateway serves the page live (merc.gateway.web) and `merc analyze --html` writes it as one
self-contained file; both come from ``render_page`` over the same files in merc/web/, so the two
views cannot drift. The timeline JSON is what events carry, no utterance text (events have none);
only ``report`` adds what was said, from the user's own manifest (``merc analyze --html``): the
live page and its API never get text. Field names are those of ``merc analyze --json`` (merc.analyze.embedded.LineResult.to_json) where
the two overlap, plus the utterance's times, the missing modalities and the set's coverage.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from importlib import resources

from merc.pipeline.join import MODALITY_NAMES
from merc.pipeline.labels import LABELS, MODALITIES
from merc.v1 import events_pb2

WEB = "web"  # package data: merc/web/{index.html,timeline.css,timeline.js}


def _r(x: float) -> float:
    return round(float(x), 6)


def mood_json(m: events_pb2.SpeakerMood) -> dict:
    return {
        "probs": {name: _r(p) for name, p in zip(LABELS, m.probabilities, strict=False)},
        "valence": _r(m.valence),
        "arousal": _r(m.arousal),
        "emotion_shifts": m.emotion_shifts,
        "utterances": m.utterances,
    }


def event_json(e: events_pb2.EmotionEvent) -> dict:
    """One event as the page draws it."""
    names = [MODALITY_NAMES[m] for m in e.modalities]
    u = e.utterance
    return {
        "conversation": u.conversation_id,
        "utterance": u.sequence,
        "speaker": u.speaker,
        "start_ms": u.start_ms,
        "end_ms": u.end_ms,
        "label": e.label,
        "probs": {name: _r(p) for name, p in zip(LABELS, e.probabilities, strict=False)},
        "confidence": _r(e.confidence),
        "prediction_set": list(e.prediction_set),
        "prediction_set_coverage": _r(e.prediction_set_coverage),
        "sentiment": e.sentiment,
        "modalities": names,
        "weights": {n: _r(w) for n, w in zip(names, e.modality_weights, strict=False)},
        "degraded": bool(e.degraded),
        "missing": [MODALITY_NAMES[m] for m in e.missing_modalities],
        "incongruence": _r(e.incongruence),
        # How much of the words' say was taken away as unlike the training text (merc.pipeline.text_shift).
        "text_shift": _r(e.text_shift),
        # What each modality predicted on its own (calibrated): which one made the call.
        "posteriors": {MODALITY_NAMES[p.modality]: {name: _r(x) for name, x in zip(LABELS, p.probabilities, strict=False)}
                       for p in e.modality_posteriors},
        "mood": {"speaker": mood_json(e.speaker_mood), "conversation": mood_json(e.conversation_mood)},
        "revision": e.revision,
        "emitted_at_ms": e.emitted_at_ms,
    }


def latest(events: Iterable[events_pb2.EmotionEvent]) -> list[dict]:
    """The latest revision of each utterance, in utterance order."""
    best: dict[int, events_pb2.EmotionEvent] = {}
    for e in events:
        seen = best.get(e.utterance.sequence)
        if seen is None or e.revision >= seen.revision:
            best[e.utterance.sequence] = e
    return [event_json(best[s]) for s in sorted(best)]


def timeline_json(conversation_id: str, events: Iterable[events_pb2.EmotionEvent]) -> dict:
    return {"conversation": conversation_id, "labels": list(LABELS), "modalities": list(MODALITIES),
            "utterances": latest(events)}


def asset(name: str) -> str:
    """One of the page's files (merc/web/NAME), from the installed package."""
    return resources.files("merc").joinpath(WEB, name).read_text(encoding="utf-8")


def _script_json(data) -> str:
    """JSON safe inside <script>: no '<', '>' or '&' that could close the element or open a comment."""
    return json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(data: dict) -> str:
    """The page with its CSS, JS and ``data`` inlined.

    ``data["mode"]``: "live" (the gateway: the page fetches /api/... and follows the event stream) or
    "static" (a report: ``data["timelines"]`` holds every conversation's timeline_json; see ``report``).
    """
    page = asset("index.html")
    parts = {
        "/*MERC:STYLE*/": asset("timeline.css"),
        "/*MERC:SCRIPT*/": asset("timeline.js"),
        "/*MERC:DATA*/": _script_json(data),
    }
    for marker, text in parts.items():
        if marker not in page:
            raise RuntimeError(f"merc/web/index.html lacks the {marker} marker")
        if "</script" in text.lower() or "</style" in text.lower():
            raise RuntimeError(f"{marker}: the inlined text would close its element early")
        page = page.replace(marker, text, 1)
    return page


def report(events: Iterable[events_pb2.EmotionEvent], title: str = "", failed_lines: int = 0,
           texts: Mapping[tuple[str, int], str] | None = None) -> str:
    """The self-contained page `merc analyze --html` writes: every conversation's timeline, in the
    order the conversations first appear.

    ``texts``: what was said, by (conversation, utterance), from the manifest the user analysed; the
    report's tooltips and details show it. It is the only way text reaches the page (the gateway has
    none to give). It is user content inside a <script>: ``_script_json`` escapes it."""
    by_conversation: dict[str, list[events_pb2.EmotionEvent]] = {}
    for e in events:
        by_conversation.setdefault(e.utterance.conversation_id, []).append(e)
    timelines = [timeline_json(c, es) for c, es in by_conversation.items()]
    for t in timelines:
        for u in t["utterances"]:
            said = (texts or {}).get((t["conversation"], u["utterance"]))
            if said:
                u["text"] = said
    return render_page({"mode": "static", "title": title, "labels": list(LABELS), "timelines": timelines,
                        "failed_lines": failed_lines})
