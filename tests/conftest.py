from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _reachable(address: str) -> bool:
    host, port = address.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


def _require(*names: str):
    """The settings, once the named real components (started by deploy/local/stack.sh) answer.

    `make test` starts them and sets MERC_REQUIRE_STACK=1, so a missing
    component fails the run instead of skipping it.
    """
    from merc.runtime.config import Settings

    cfg = Settings()
    addresses = {
        "Kafka": cfg.kafka_bootstrap.split(",")[0],
        "PostgreSQL": cfg.database_url.split("@", 1)[1].split("/", 1)[0],
        "Triton": cfg.triton_url,
    }
    missing = [n for n in names if not _reachable(addresses[n])]
    if missing:
        message = f"{', '.join(missing)} not reachable: start with `deploy/local/stack.sh up all` (or run `make test`)"
        if os.environ.get("MERC_REQUIRE_STACK") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return cfg


@pytest.fixture(scope="session")
def kafka():
    return _require("Kafka")


@pytest.fixture(scope="session")
def postgres():
    return _require("PostgreSQL")


@pytest.fixture(scope="session")
def triton():
    return _require("Triton")


@pytest.fixture(scope="session")
def stack():
    return _require("Kafka", "PostgreSQL", "Triton")


@pytest.fixture(scope="module")
def browser():
    """Headless Chromium for the page tests (tests/web_browser.py), one per module (Playwright's sync API holds an
    event loop while it runs); skips without it (fails under MERC_REQUIRE_STACK=1)."""
    from web_browser import chromium

    with chromium() as b:
        yield b
