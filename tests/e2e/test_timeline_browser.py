"""The gateway's timeline page in a real browser against the running stack: headless Chromium from
Debian (deploy/local/browser.sh installs it) driven by Playwright (the `browser` fixture,
tests/web_browser.py). Utterances sent through the gateway appear on the open page as their events
arrive; a reload draws the stored timeline; axe-core finds no serious or critical accessibility
violation. Screenshot: .run/reports/timeline.png (the README's live-page picture)."""

from __future__ import annotations

import os
import re

import pytest
from conftest import REPO
from web_browser import VIEWPORT, assert_accessible

from e2e.conftest import dialogue, new_conversation
from merc.pipeline.labels import LABELS
from merc.v1 import common_pb2, gateway_pb2

pytestmark = pytest.mark.e2e
UTTERANCES = 5


def utterance_count(page) -> int:
    return page.locator("section.conversation svg .utt").count()


def wait_for_utterances(page, n: int, timeout_ms: int) -> None:
    # Locators, not wait_for_function: the page's Content-Security-Policy forbids eval, which that needs.
    for seq in range(n):
        page.wait_for_selector(f"section.conversation svg .utt[data-seq='{seq}']", timeout=timeout_ms)


def test_events_appear_live_on_the_timeline_page(running, gateway, browser):
    conversation = new_conversation()
    url = f"http://127.0.0.1:{running.http_port}/#c={conversation}"
    page = browser.new_page(viewport=VIEWPORT)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    page.goto(url)
    # The event stream is open before anything is sent: every event must come through it.
    expect = pytest.importorskip("playwright.sync_api").expect
    expect(page.locator("#status")).to_have_text(re.compile("^live"), timeout=15_000)
    assert utterance_count(page) == 0

    lines = dialogue()[:UTTERANCES]
    for seq, u in enumerate(lines):
        ref = common_pb2.UtteranceRef(conversation_id=conversation, sequence=seq, speaker=u["speaker"],
                                      start_ms=seq * 2000, end_ms=seq * 2000 + 1600)
        gateway.AnalyzeUtterance(gateway_pb2.AnalyzeUtteranceRequest(utterance=ref, text=u["text"]), timeout=30)
        if seq == 0:  # the first one shows up live, while the rest are still to be sent
            page.wait_for_selector("section.conversation svg .utt[data-seq='0']", timeout=90_000)
    wait_for_utterances(page, len(lines), 90_000)

    speakers = {u["speaker"] for u in lines}
    assert page.locator("svg .lane").count() == len(speakers)
    assert page.locator("svg .utt[data-seq='0'] rect.seg").count() >= 1
    assert page.locator("svg .utt[data-seq='0'] rect.weight[data-modality='text']").count() == 1
    assert page.locator("svg .utt[data-seq='0'] rect.set").count() >= 1
    assert page.locator("svg polyline.mood").count() >= 1
    # The recent-conversations list (from the gateway's hub) names it.
    page.wait_for_selector(f"#recent a[data-conversation='{conversation}']", timeout=15_000)
    # Details of one utterance, by click, then by keyboard (Escape closes them), then the picture.
    page.locator("svg .utt[data-seq='1']").click()
    details = page.locator("#details").inner_text()
    assert page.locator("#details").is_visible() and "prediction set" in details
    assert re.search(r"text alone\s+(" + "|".join(LABELS) + r") \d\.\d\d \(calibrated\)", details), details
    page.keyboard.press("Escape")
    expect(page.locator("#details")).to_be_hidden()
    page.locator("svg .utt[data-seq='2']").focus()
    page.keyboard.press("Enter")
    expect(page.locator("#details")).to_be_visible()
    assert page.locator("#details h2").inner_text().endswith(f"#2 · {lines[2]['speaker']}")
    assert_accessible(page)  # with the details open: the panel is checked too
    out = REPO / os.environ.get("MERC_RUN_DIR", ".run") / "reports"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / "timeline.png"), full_page=True)
    page.keyboard.press("Escape")
    expect(page.locator("#details")).to_be_hidden()
    assert page.evaluate("() => document.activeElement.getAttribute('data-seq')") == "2"  # back on the bar
    # No utterance text reaches the page: events carry none.
    content = page.content()
    assert not any(u["text"] in content for u in lines if len(u["text"]) > 12)

    # A fresh load draws the same utterances from the stored timeline (PostgreSQL).
    page.reload()
    wait_for_utterances(page, len(lines), 30_000)
    assert utterance_count(page) == len(lines)
    assert_accessible(page)
    assert errors == []
    page.close()
