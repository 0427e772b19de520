"""How `make install` gets its dependencies: every distribution merc[dev] pulls in is pinned in
deploy/requirements/constraints.txt, downloads are retried (deploy/retry.sh) and kept in a wheelhouse
that a later install uses without the network (deploy/wheelhouse.sh)."""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = REPO / "deploy" / "requirements" / "constraints.txt"
RETRY = REPO / "deploy" / "retry.sh"
WHEELHOUSE = REPO / "deploy" / "wheelhouse.sh"


def pins(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            out[canonicalize_name(name)] = version
    return out


def closure(name: str, extras: frozenset[str]) -> dict[str, str]:
    """The installed distributions `name[extras]` requires, recursively, with their versions."""
    seen: dict[str, str] = {}
    visited: set[tuple[str, frozenset[str]]] = set()
    todo = [(canonicalize_name(name), extras)]
    while todo:
        current, wanted = todo.pop()
        if (current, wanted) in visited:
            continue
        visited.add((current, wanted))
        dist = distribution(current)
        seen[current] = dist.version
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker and not any(req.marker.evaluate({"extra": extra}) for extra in (wanted or {""})):
                continue
            todo.append((canonicalize_name(req.name), frozenset(req.extras)))  # merc[dev] -> merc[all] -> ...
    return seen


def test_every_distribution_the_dev_install_pulls_in_is_pinned_at_its_installed_version():
    try:
        installed = closure("merc", frozenset({"dev"}))
    except PackageNotFoundError as exc:  # a distribution merc[dev] needs is missing: make install
        pytest.fail(f"not installed: {exc}")
    installed.pop("merc")
    pinned = pins(CONSTRAINTS)
    assert len(installed) > 100, installed  # the walk followed the extras
    unpinned = sorted(set(installed) - set(pinned))
    assert not unpinned, f"not in {CONSTRAINTS.name} (run `make lock`): {unpinned}"
    differ = {name: (version, pinned[name]) for name, version in installed.items() if pinned[name] != version}
    assert not differ, f"installed vs pinned (run `make install`, or `make lock` and test): {differ}"
    for pinned_tool in ("pip", "setuptools", "wheel"):  # what the offline install builds the project with
        assert pinned_tool in pinned


def run_retry(tmp_path: Path, fail_times: int, tries: int) -> subprocess.CompletedProcess:
    counter = tmp_path / "count"
    counter.write_text("0")
    script = f"n=$(( $(cat {counter}) + 1 )); echo $n > {counter}; [ $n -gt {fail_times} ] || exit 7"
    env = {**os.environ, "MERC_RETRY_TRIES": str(tries), "MERC_RETRY_PAUSE": "0"}
    return subprocess.run([str(RETRY), "bash", "-c", script], env=env, capture_output=True, text=True, timeout=60)


def test_retry_runs_a_failing_command_again_until_it_succeeds(tmp_path):
    done = run_retry(tmp_path, fail_times=2, tries=5)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "count").read_text().strip() == "3"
    assert done.stderr.count("failed (exit 7)") == 2


def test_retry_gives_up_with_the_commands_exit_status(tmp_path):
    done = run_retry(tmp_path, fail_times=10, tries=3)
    assert done.returncode == 7
    assert (tmp_path / "count").read_text().strip() == "3"
    assert "gave up after 3 tries" in done.stderr


def tiny_wheel(folder: Path) -> Path:
    """A pure-Python wheel built by hand: no build backend, no network."""
    folder.mkdir()
    path = folder / "merc_pin_probe-1.0-py3-none-any.whl"
    files = {
        "merc_pin_probe.py": b"VALUE = 42\n",
        "merc_pin_probe-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: merc-pin-probe\nVersion: 1.0\n",
        "merc_pin_probe-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(path, "w") as whl:
        for name, data in files.items():
            whl.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append(f"{name},sha256={digest},{len(data)}")
        record.append("merc_pin_probe-1.0.dist-info/RECORD,,")
        whl.writestr("merc_pin_probe-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


def test_wheelhouse_keeps_what_it_downloaded_and_installs_from_it_without_the_source(tmp_path):
    source = tiny_wheel(tmp_path / "index").parent
    house = tmp_path / "house"
    target = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(target)], check=True, timeout=120)
    py = str(target / "bin" / "python")
    env = {**os.environ, "MERC_WHEELHOUSE": str(house), "MERC_RETRY_TRIES": "1"}
    # --no-index: only the folder is a source (what PyPI is for make install).
    ask = [str(WHEELHOUSE), py, "--no-index", "--find-links", str(source), "merc-pin-probe==1.0"]
    first = subprocess.run(ask, env=env, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert [p.name for p in house.iterdir()] == ["merc_pin_probe-1.0-py3-none-any.whl"]

    subprocess.run([py, "-m", "pip", "uninstall", "-q", "-y", "merc-pin-probe"], check=True, timeout=120)
    for path in source.iterdir():
        path.unlink()
    second = subprocess.run(ask, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    probe = subprocess.run([py, "-c", "import merc_pin_probe; print(merc_pin_probe.VALUE)"], capture_output=True, text=True)
    assert probe.stdout.strip() == "42", probe.stderr
