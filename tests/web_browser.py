"""Headless Chromium (Debian's, installed by deploy/local/browser.sh) through Playwright, and the
axe-core accessibility check, for the browser tests: the live timeline page
(tests/e2e/test_timeline_browser.py over the real stack, tests/unit/test_page_browser.py over the
in-process web server) and the `merc analyze --html` report (tests/unit/test_page_browser.py).
Without Chromium or axe-core they skip, and fail under MERC_REQUIRE_STACK=1 (`make test`)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import REPO

CHROMIUM = Path(os.environ.get("MERC_CHROMIUM", "/usr/bin/chromium"))
AXE = REPO / ".tools/axe/node_modules/axe-core/axe.min.js"  # deploy/local/browser.sh installs the pinned version
BLOCKING = ("serious", "critical")  # axe-core impacts that fail a test; minor and moderate ones are listed with them
VIEWPORT = {"width": 1400, "height": 900}
SHOTS = REPO / os.environ.get("MERC_RUN_DIR", ".run") / "reports"


def unavailable(message: str) -> None:
    if os.environ.get("MERC_REQUIRE_STACK") == "1":
        pytest.fail(message)
    pytest.skip(message)


@contextmanager
def chromium() -> Iterator:
    if not CHROMIUM.exists():
        unavailable(f"no {CHROMIUM}: run deploy/local/browser.sh (Debian's chromium)")
    if not AXE.exists():
        unavailable(f"no {AXE.relative_to(REPO)}: run deploy/local/browser.sh (axe-core from npm)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        # --no-sandbox: the tests run as root; --disable-dev-shm-usage: small /dev/shm in containers.
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            yield b
        finally:
            b.close()


def axe_violations(page) -> list[dict]:
    """axe-core's violations on the page as it is now. Evaluated through the DevTools protocol, which the
    page's Content-Security-Policy (no inline script, no eval) does not govern; a <script> tag would be refused."""
    if not page.evaluate("() => typeof window.axe === 'object'"):
        page.evaluate(AXE.read_text(encoding="utf-8"))
    return page.evaluate("() => axe.run(document, { resultTypes: ['violations'] }).then(r => r.violations)")


def describe(violations: list[dict]) -> str:
    lines = []
    for v in violations:
        lines.append(f"[{v['impact']}] {v['id']}: {v['help']} ({len(v['nodes'])} element(s))")
        lines += [f"    {n['target']}: {' '.join(n.get('failureSummary', '').split())}" for n in v["nodes"][:5]]
    return "\n".join(lines)


def assert_accessible(page) -> None:
    """No serious or critical axe-core violation; the message lists every violation, whatever its impact."""
    violations = axe_violations(page)
    blocking = [v for v in violations if v["impact"] in BLOCKING]
    assert not blocking, f"{len(blocking)} serious/critical accessibility violation(s):\n{describe(violations)}"


def rgb(css_color: str) -> str:
    """'rgb(29, 35, 41)' as '#1d2329' (what getComputedStyle returns, as the contrast helpers take it)."""
    r, g, b = (int(x) for x in re.findall(r"\d+", css_color)[:3])
    return f"#{r:02x}{g:02x}{b:02x}"
