"""The worst media inputs we can build, by class, for the limit tests and the fuzzers.

- compressed bombs: a FLAC of hours of digital silence (CONSTANT subframes of 65535 samples, about
  15 bytes each: 60 kB for 10 hours at 8 kHz, 1.1 GB once decoded to float32);
- lying headers: a FLAC whose STREAMINFO claims a length its frames do not have, a WAV whose RIFF
  and data sizes claim 4 GB, a Matroska file whose Duration claims centuries;
- non-regular files: a FIFO with no writer, a device, a directory.

Built by hand (bit by bit, CRCs included) so they are valid where it matters and made in milliseconds.
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np
import soundfile as sf

MAX_BLOCK = 65535  # FLAC's largest block: the fewest bytes per decoded sample


def _crc8(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


_CRC16 = []
for _i in range(256):
    _c = _i << 8
    for _ in range(8):
        _c = ((_c << 1) ^ 0x8005) & 0xFFFF if _c & 0x8000 else (_c << 1) & 0xFFFF
    _CRC16.append(_c)


def _crc16(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = ((crc << 8) & 0xFFFF) ^ _CRC16[(crc >> 8) ^ byte]
    return crc


def _utf8_number(n: int) -> bytes:
    """FLAC's frame number: UTF-8's variable-length coding, extended to 36 bits."""
    if n < 0x80:
        return bytes([n])
    for length, top in ((2, 0xC0), (3, 0xE0), (4, 0xF0), (5, 0xF8), (6, 0xFC), (7, 0xFE)):
        if n < 1 << (5 * length + 1) or length == 7:
            tail = [0x80 | ((n >> (6 * i)) & 0x3F) for i in range(length - 1)][::-1]
            return bytes([top | (n >> (6 * (length - 1)))] + tail)
    raise AssertionError


def flac_silence(seconds: float, rate: int = 8000, channels: int = 1, claimed_samples: int | None = None) -> bytes:
    """A FLAC of ``seconds`` of silence; its STREAMINFO says ``claimed_samples`` (the truth by default; 0 = unknown)."""
    total = int(seconds * rate)
    claimed = total if claimed_samples is None else claimed_samples
    info = struct.pack(">HH", MAX_BLOCK, MAX_BLOCK) + bytes(6)  # block sizes; frame sizes unknown
    info += ((rate << 44) | ((channels - 1) << 41) | (15 << 36) | (claimed & (2**36 - 1))).to_bytes(8, "big")
    info += bytes(16)  # no MD5
    out = bytearray(b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info)
    for number, start in enumerate(range(0, total, MAX_BLOCK)):
        size = min(MAX_BLOCK, total - start)
        header = bytes([0xFF, 0xF8, 0x70, ((channels - 1) << 4) | (0b100 << 1)]) + _utf8_number(number)
        header += (size - 1).to_bytes(2, "big")
        header += bytes([_crc8(header)])
        frame = header + b"\x00\x00\x00" * channels  # CONSTANT subframes of the value 0
        out += frame + _crc16(frame).to_bytes(2, "big")
    return bytes(out)


def wav_lying(seconds: float = 1.0, rate: int = 16_000, claimed_bytes: int = 0xFFFFFFF0) -> bytes:
    """A 16-bit WAV of ``seconds`` of a tone whose RIFF and data chunk sizes claim ``claimed_bytes``."""
    t = np.arange(int(seconds * rate)) / rate
    buf = io.BytesIO()
    sf.write(buf, (0.1 * np.sin(2 * np.pi * 200 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    data = bytearray(buf.getvalue())
    data[4:8] = struct.pack("<I", min(claimed_bytes + 36, 0xFFFFFFFF))
    at = data.index(b"data")
    data[at + 4 : at + 8] = struct.pack("<I", claimed_bytes)
    return bytes(data)


def mkv_lying_duration(path: Path, seconds: float = 2.0, claimed_ms: float = 1e15) -> Path:
    """A silent Matroska video of ``seconds`` whose Segment Info says it lasts ``claimed_ms``."""
    from samples import media_file

    media_file(path, talk=(), seconds=seconds, fps=5, size=32, audio=False)
    data = bytearray(path.read_bytes())
    at = data.index(b"\x44\x89")  # the Duration element: an 8-byte (or 4-byte) float
    size = data[at + 2] & 0x7F
    data[at + 3 : at + 3 + size] = struct.pack(">d" if size == 8 else ">f", claimed_ms)
    path.write_bytes(bytes(data))
    return path


def fifo(path: Path) -> Path:
    """A named pipe nobody writes to: a plain open() for reading would block forever."""
    os.mkfifo(path)
    return path


NON_REGULAR = ("/dev/zero", "/dev/null", "/dev/urandom", "/")
