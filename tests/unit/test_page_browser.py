"""The timeline page in headless Chromium without the stack: the `merc analyze --html` report (from
synthetic events through timeline.report) and the live page over the in-process web server (SQLite
store, memory bus; tests/unit/test_web.py's fixture). Layout (the time axis fills the card, zoom,
ellipsised speaker names, the mood lane), contrast of every drawn text, keyboard use (focus ring,
details on Enter/Space/click, Escape), what was said in the report only, and axe-core's check: no
serious or critical violation. Skips without Chromium/axe-core (deploy/local/browser.sh) unless
MERC_REQUIRE_STACK=1.

Pictures: .run/reports/report.png and timeline-local.png; MERC_UPDATE_SCREENSHOTS=1 also writes the
README's docs/report.png (the live page's is the e2e test's .run/reports/timeline.png)."""

from __future__ import annotations

import os
import re

import pytest
from conftest import REPO
from web_browser import SHOTS, VIEWPORT, assert_accessible, rgb

from merc.analyze import timeline
from merc.pipeline.events import to_event
from merc.pipeline.labels import LABELS
from unit.test_web import contrast, publish, serving, stored

LONG_NAME = "Customer with a remarkably long display name, Esq."
SAID = "It's been </script><b>three</b> weeks & nobody called back!"


def call(conversation: str = "call-1", n: int = 10) -> list:
    """A 20 s call, two speakers, every label, degraded and incongruent utterances, a revision."""
    events = []
    for seq in range(n):
        label = LABELS[seq % len(LABELS)]
        r = stored("t", conversation, seq, speaker=("Agent", LONG_NAME)[seq % 2], label=label,
                   revision=1 if seq == 3 else 0)
        r.start_ms, r.end_ms = 2000 * seq, 2000 * seq + 1600
        r.probabilities = [0.7 if name == label else 0.05 for name in LABELS]
        r.prediction_set = [label, LABELS[(seq + 1) % len(LABELS)]]
        r.degraded, r.incongruence = seq % 3 == 0, 0.6 if seq % 4 == 0 else 0.1
        r.speaker_moods = {r.speaker: {"probabilities": r.probabilities, "valence": 0.6 - 0.12 * seq, "arousal": 0.2,
                                       "emotion_shifts": seq, "utterances": seq + 1}}
        events.append(to_event(r))
    return events


@pytest.fixture
def web(tmp_path):
    """The in-process web server of tests/unit/test_web.py: (start, bus)."""
    with serving(tmp_path) as served:
        yield served


def focused(page):
    return page.evaluate("() => { const a = document.activeElement; return a && (a.getAttribute('data-seq') || a.id); }")


def tab_to(page, seq: int, limit: int = 40) -> None:
    """Tab (the keyboard, so :focus-visible holds) until the bar of utterance ``seq`` has the focus."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        if focused(page) == str(seq):
            return
    raise AssertionError(f"Tab never reached utterance {seq}")


def box(page, selector: str) -> dict:
    return page.locator(selector).first.bounding_box()


def text_colours(page) -> set[tuple[str, str]]:
    """(colour, background) of every text drawn on the page: SVG text on the lane (or on the degraded mark it
    sits in), HTML text on its nearest painted ancestor."""
    return {tuple(p) for p in page.evaluate("""() => {
      const out = new Map(), lane = getComputedStyle(document.querySelector('svg .lane-bg')).fill;
      const add = (fg, bg) => out.set(fg + '|' + bg, [fg, bg]);
      document.querySelectorAll('svg text').forEach(t => {
        const under = t.classList.contains('degraded-bang') ? getComputedStyle(t.previousElementSibling).fill : lane;
        add(getComputedStyle(t).fill, under);
      });
      document.querySelectorAll('body *').forEach(e => {
        if (e.closest('svg') || !e.offsetParent) return;
        if (![...e.childNodes].some(n => n.nodeType === 3 && n.textContent.trim())) return;
        let b = e;
        while (b && getComputedStyle(b).backgroundColor === 'rgba(0, 0, 0, 0)') b = b.parentElement;
        add(getComputedStyle(e).color, b ? getComputedStyle(b).backgroundColor : 'rgb(255, 255, 255)');
      });
      return [...out.values()];
    }""")}


def shoot(page, name: str, docs_name: str | None = None) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / name), full_page=True)
    if docs_name and os.environ.get("MERC_UPDATE_SCREENSHOTS") == "1":
        page.screenshot(path=str(REPO / "docs" / docs_name), full_page=True)


def test_the_report_fills_the_card_works_by_keyboard_shows_what_was_said_and_passes_axe(browser, tmp_path):
    out = tmp_path / "report.html"
    out.write_text(timeline.report(call(), title="call.jsonl", texts={("call-1", 1): SAID, ("call-1", 2): "Let me check."}),
                   encoding="utf-8")
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(out.as_uri())
    page.wait_for_selector("svg .utt[data-seq='9']")
    expect = pytest.importorskip("playwright.sync_api").expect

    # The 20 s call spans the card: the last bar ends near the right edge, nothing to scroll at zoom 1.
    scroll, last = box(page, ".scroll"), box(page, "svg .utt[data-seq='9'] rect.frame")
    assert last["x"] + last["width"] > scroll["x"] + 0.85 * scroll["width"], (last, scroll)
    assert page.evaluate("() => { const s = document.querySelector('.scroll'); return s.scrollWidth <= s.clientWidth; }")
    # A long speaker name is cut with an ellipsis inside the gutter, the full name in its tooltip.
    name = page.locator(f".lane-name[title='{LONG_NAME}']")
    assert name.count() == 1 and name.evaluate("n => n.scrollWidth > n.clientWidth")
    gutter = box(page, ".gutter")
    assert name.bounding_box()["x"] + name.bounding_box()["width"] <= gutter["x"] + gutter["width"] <= scroll["x"]
    assert box(page, "svg rect.mood-bg")["height"] >= 60  # the mood lane is readable
    # No text in an emotion colour: everything drawn as text is AA (4.5:1) on what it is drawn on.
    pairs = text_colours(page)
    assert len(pairs) >= 4, pairs
    for fg, bg in pairs:
        assert contrast(rgb(fg), rgb(bg)) >= 4.5, (fg, bg)

    # Keyboard: the focus ring shows on a degraded bar; Enter opens the details, with what was said; Escape closes.
    tab_to(page, 0)
    ring = page.locator("svg .utt[data-seq='0'] .focus-ring.ring")
    assert "degraded" in page.locator("svg .utt[data-seq='0']").get_attribute("class")
    assert ring.evaluate("r => getComputedStyle(r).stroke") != "none" and float(ring.evaluate("r => getComputedStyle(r).strokeWidth").rstrip("px")) >= 2
    tab_to(page, 1)
    page.keyboard.press("Enter")
    expect(page.locator("#details")).to_be_visible()
    assert focused(page) == "details"  # the panel has the focus: a screen reader reads it
    assert page.locator("#details blockquote").inner_text() == SAID  # user text shown as text, never as markup
    assert page.locator("#details b").count() == 0
    assert SAID in page.locator("svg .utt[data-seq='1'] > title").text_content()
    shoot(page, "report.png", "report.png")
    assert_accessible(page)
    page.keyboard.press("Escape")
    expect(page.locator("#details")).to_be_hidden()
    assert focused(page) == "1"
    # Space opens another; its close button works by keyboard.
    page.locator("svg .utt[data-seq='2']").focus()
    page.keyboard.press(" ")
    expect(page.locator("#details blockquote")).to_have_text("Let me check.")
    page.locator("#details button").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#details")).to_be_hidden()
    # A click opens the details too; an utterance the manifest gave no text has none.
    page.locator("svg .utt[data-seq='5']").click()
    expect(page.locator("#details h2")).to_have_text(f"call-1 #5 · {LONG_NAME}")
    assert page.locator("#details blockquote").count() == 0

    # Zoom: + widens the axis (scrolling), 0 fits it again; the focused bar keeps the focus.
    width = page.evaluate("() => document.querySelector('svg.timeline').getBoundingClientRect().width")
    page.keyboard.press("Escape")
    page.keyboard.press("+")
    page.keyboard.press("+")
    expect(page.locator(".zoom-bar [aria-live]")).to_have_text(re.compile(r"zoom 2\.\d×"))
    assert page.evaluate("() => document.querySelector('svg.timeline').getBoundingClientRect().width") > 2 * width
    assert page.evaluate("() => { const s = document.querySelector('.scroll'); return s.scrollWidth > s.clientWidth; }")
    assert focused(page) == "5"
    page.keyboard.press("0")
    expect(page.locator(".zoom-bar [aria-live]")).to_have_text("zoom 1×")
    # A narrower window redraws the axis to the card's new width (the report has no CSP: wait_for_function may eval).
    page.set_viewport_size({"width": 900, "height": 900})
    page.wait_for_function("""() => { const s = document.querySelector('.scroll'), svg = document.querySelector('svg.timeline');
      return s.clientWidth < 900 && Math.abs(svg.width.baseVal.value - s.clientWidth) < 1; }""", timeout=10_000)
    assert errors == []
    page.close()


def test_the_live_page_without_the_stack_is_accessible_keeps_the_focus_and_carries_no_text(browser, web):
    start, bus = web
    server = start(tenant="tenant-a")
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(f"http://127.0.0.1:{server.port}/#c=call-1")
    page.wait_for_selector("svg .utt[data-seq='1']")
    expect = pytest.importorskip("playwright.sync_api").expect
    expect(page.locator("#status")).to_have_text(re.compile("^live: following call-1"))
    # An event arriving while a bar has the focus redraws the chart, and the focus stays on that bar.
    tab_to(page, 0)
    publish(bus, "tenant-a", "call-1", 2, speaker="b", label="sadness")
    page.wait_for_selector("svg .utt[data-seq='2']")
    assert focused(page) == "0"
    page.keyboard.press("Enter")
    expect(page.locator("#details")).to_be_visible()
    assert page.locator("#details blockquote").count() == 0  # events carry no text
    # A new revision of the open utterance updates its details.
    publish(bus, "tenant-a", "call-1", 0, label="anger", revision=1)
    expect(page.locator("#details tr", has_text="emotion")).to_contain_text("anger")
    assert_accessible(page)
    shoot(page, "timeline-local.png")
    assert errors == []
    page.close()
