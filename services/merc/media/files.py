"""Media files named by a manifest or given to `merc analyze`: regular files only, read with a size cap.

A path can name a FIFO (a read blocks until someone writes, maybe forever), a device (/dev/zero
never ends) or a directory. Opening with O_NONBLOCK never blocks, and the check is made on the
opened descriptor (fstat), so the file cannot be swapped between the check and the read.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from merc.media import MediaError

_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_CLOEXEC", 0)
_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def open_regular(path: Path) -> BinaryIO:
    """The opened file, if ``path`` is a regular file (symbolic links followed); MediaError otherwise.

    OSError (no such file, no permission) propagates: callers already report those with the path.
    """
    fd = os.open(path, _FLAGS)
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
            raise MediaError(f"{path}: is {kind}; media must be a regular file")
        f = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    f.raw.name = str(path)  # (FFmpeg and error messages see the path, not the descriptor's number)
    return f


def read_regular_file(path: Path, limit: int, why: str = "") -> bytes:
    """At most ``limit`` bytes of a regular file; MediaError for anything else or anything longer.

    Reads ``limit + 1`` bytes at most, so a file that grows after the size check cannot make it
    read more. ``why`` names the limit in the message (the setting it comes from).
    """
    with open_regular(path) as f:
        data = f.read(limit + 1) if os.fstat(f.fileno()).st_size <= limit else None
    if data is None or len(data) > limit:
        raise MediaError(f"{path}: is larger than {limit} bytes{why and ', ' + why}")
    return data
