"""The conversation the text encoder reads before an utterance: format, bounds, causality."""

from merc.pipeline import text_context as ct


def test_most_recent_first_marked_relative_to_the_speaker_and_normalised():
    history = [(False, "Hi\u2026"), (True, "  Hello  "), (False, "Fine.")]
    assert ct.causal_context(history) == "(other) Fine. | (same) Hello | (other) Hi..."
    assert ct.causal_context(history, turns=1, speakers=False) == "Fine."
    assert ct.causal_context([], turns=3) == ""
    assert ct.causal_context(history, turns=0) == ""


def test_memory_keeps_the_last_turns_per_conversation_only():
    m = ct.ContextMemory(turns=2)
    assert m.context("c1", "A") == "" and "c1" not in m
    for speaker, text in (("A", "one"), ("B", "two"), ("A", "three")):
        m.remember("c1", speaker, text)
    m.remember("c2", "A", "elsewhere")
    m.remember("c1", "B", "   ")  # nothing said: not a turn
    assert m.context("c1", "B") == "(other) three | (same) two"
    assert m.context("c2", "B") == "(other) elsewhere"


def test_without_speaker_labels_every_earlier_turn_reads_as_another_speakers():
    m = ct.ContextMemory()
    m.remember("c", "", "first")
    m.remember("c", "", "second")
    assert m.context("c", "") == "(other) second | (other) first"
