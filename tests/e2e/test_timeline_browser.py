"""The gateway's timeline page in a real browser against the running stack: headless Chromium from
Debian (deploy/local/browser.sh installs it) driven by Playwright. Utterances sent through the
gateway appear on the open page as their events arrive; a reload draws the stored timeline.
Screenshot: .run/reports/timeline.png."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from conftest import REPO

from e2e.conftest import dialogue, new_conversation
from merc.pipeline.labels import LABELS
from merc.v1 import common_pb2, gateway_pb2

pytestmark = pytest.mark.e2e
CHROMIUM = Path(os.environ.get("MERC_CHROMIUM", "/usr/bin/chromium"))
UTTERANCES = 5


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        message = f"no {CHROMIUM}: run deploy/local/browser.sh (Debian's chromium)"
        if os.environ.get("MERC_REQUIRE_STACK") == "1":
            pytest.fail(message)
        pytest.skip(message)
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: the tests run as root; --disable-dev-shm-usage: small /dev/shm in containers.
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        yield b
        b.close()


def utterance_count(page) -> int:
    return page.locator("section.conversation svg .utt").count()


def wait_for_utterances(page, n: int, timeout_ms: int) -> None:
    # Locators, not wait_for_function: the page's Content-Security-Policy forbids eval, which that needs.
    for seq in range(n):
        page.wait_for_selector(f"section.conversation svg .utt[data-seq='{seq}']", timeout=timeout_ms)


def test_events_appear_live_on_the_timeline_page(running, gateway, browser):
    conversation = new_conversation()
    url = f"http://127.0.0.1:{running.http_port}/#c={conversation}"
    page = browser.new_page(viewport={"width": 1280, "height": 860})
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
    # Details of one utterance, then the picture.
    page.locator("svg .utt[data-seq='1']").click()
    details = page.locator("#details").inner_text()
    assert page.locator("#details").is_visible() and "prediction set" in details
    assert re.search(r"text alone\s+(" + "|".join(LABELS) + r") \d\.\d\d \(calibrated\)", details), details
    out = REPO / os.environ.get("MERC_RUN_DIR", ".run") / "reports"
    out.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out / "timeline.png"), full_page=True)
    # No utterance text reaches the page: events carry none.
    content = page.content()
    assert not any(u["text"] in content for u in lines if len(u["text"]) > 12)

    # A fresh load draws the same utterances from the stored timeline (PostgreSQL).
    page.reload()
    wait_for_utterances(page, len(lines), 30_000)
    assert utterance_count(page) == len(lines)
    assert errors == []
    page.close()
