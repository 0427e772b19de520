"""Fuzz tests: print how many cases each target ran and how they ended."""

from __future__ import annotations

import pytest

from fuzz.common import SCALE, TALLY, THOROUGH


@pytest.fixture(scope="session")
def inference():
    """The real models, in process (loading takes seconds: once for every fuzz module)."""
    from merc.inference.local import LocalInference

    client = LocalInference(None, 1)
    yield client
    client.close()


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not TALLY:
        return
    failed = [r for r in terminalreporter.stats.get("failed", []) if "tests/fuzz/" in r.nodeid.replace("\\", "/")]
    mode = f"thorough x{SCALE}, random inputs" if THOROUGH else "ci profile, derandomized"
    terminalreporter.section(f"fuzz cases ({mode})")
    total = 0
    for target in sorted(TALLY):
        outcomes = TALLY[target]
        n = sum(outcomes.values())
        total += n
        detail = ", ".join(f"{k} {v}" for k, v in sorted(outcomes.items()))
        terminalreporter.write_line(f"{target:<28} {n:>6} cases ({detail})")
    terminalreporter.write_line(f"{'total':<28} {total:>6} cases, {len(failed)} crashing target(s)")
