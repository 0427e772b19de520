"""Peak memory of one call, measured in a fresh process (Linux): how much the resident set grows.

The call runs in a new interpreter after its setup (imports, reading the input), so nothing else
the test session holds is counted. The peak is the kernel's high-water mark (VmHWM), reset after
the setup where the kernel allows it (/proc/self/clear_refs), else the whole process's peak: either
way an upper bound on what the call itself took.

    python tests/memory_bounds.py   # the table in the README's "Limits and memory"
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
MB = 2**20

_SCRIPT = """
import os, sys, json
def _status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))
{setup}
try:
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # the peak starts again from here
except OSError:
    pass
_base = _status("VmRSS")
try:
    _result, _error = repr({call})[:300], None
except Exception as e:
    _result, _error = None, f"{{type(e).__name__}}: {{e}}"
print("MEMORY-BOUNDS " + json.dumps({{"base": _base, "peak": _status("VmHWM"), "result": _result, "error": _error}}))
"""


@dataclass
class Measured:
    growth_mb: float  # the peak resident set during the call, less what the process held before it
    base_mb: float
    result: str | None  # repr of what the call returned
    error: str | None  # "ExceptionType: message" if it raised

    def __str__(self) -> str:
        return f"+{self.growth_mb:.1f} MB over {self.base_mb:.0f} MB ({self.error or self.result})"


def measure(setup: str, call: str, env: dict[str, str] | None = None, timeout: float = 120) -> Measured:
    """Run ``setup`` (statements) then ``call`` (an expression) in a new interpreter; its peak memory growth."""
    script = _SCRIPT.format(setup=textwrap.dedent(setup), call=call)
    paths = [str(REPO / "services"), str(REPO / "tests"), os.environ.get("PYTHONPATH", "")]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), "OMP_NUM_THREADS": "1",
                **(env or {})}
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=timeout, env=full_env,
                          check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("MEMORY-BOUNDS ")), None)
    if line is None:
        raise AssertionError(f"the measured process failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
    out = json.loads(line.split(" ", 1)[1])
    return Measured((out["peak"] - out["base"]) / MB, out["base"] / MB, out["result"], out["error"])


_PLUGIN = """
import numpy as np
from merc.pipeline import modalities
from merc.runtime.config import Settings
from merc.v1 import encoder_pb2

class Stub:
    def infer(self, model, inputs):
        return {{"EMBEDDING": np.zeros((len(next(iter(inputs.values()))), 128), np.float32)}}

    def version(self, model):
        return "stub"

plugin = modalities.{plugin}(Stub(), Settings())
plugin.encode(plugin.warmup_request())  # lazy loads (VAD model, face detector, scipy) are not the request's
import scipy.signal
"""


# The worst input of each class, per encoder and for an embedded run: (what, setup, call).
# Every input is built in memory by tests/bombs.py; limits are the defaults (Settings()).
WORST = {
    "audio: FLAC bomb (10 h of silence, 8 kHz, 60 kB)": (
        "from bombs import flac_silence\nfrom merc import media\nimport scipy.signal\ndata = flac_silence(10 * 3600)",
        "media.decode_audio(data, max_seconds=60)"),
    "audio: largest accepted file (FLAC, 8 channels, 384 kHz, 59.9 s)": (
        "from bombs import flac_silence\nfrom merc import media\nimport scipy.signal\ndata = flac_silence(59.9, rate=384_000, channels=8)",
        "len(media.decode_audio(data, max_seconds=60))"),
    "audio: FLAC whose header claims 2**36 samples (10 s real)": (
        "from bombs import flac_silence\nfrom merc import media\nimport scipy.signal\ndata = flac_silence(10, claimed_samples=2**36 - 1)",
        "media.decode_audio(data, max_seconds=60)"),
    "audio: WAV whose header claims 4 GB (1 s real)": (
        "from bombs import wav_lying\nfrom merc import media\nimport scipy.signal\ndata = wav_lying(1.0)",
        "len(media.decode_audio(data, max_seconds=60))"),
    "audio: raw PCM, 32 MiB at 1 kHz (4.6 h by its size)": (
        "from merc import media\nimport scipy.signal\ndata = bytes(32 * 2**20)",
        "media.decode_audio(data, 'pcm_s16le', 1000, 1, max_seconds=60)"),
    "audio: largest accepted raw PCM (32 MiB, s16, 384 kHz)": (
        "from merc import media\nimport scipy.signal\ndata = bytes(32 * 2**20)",
        "len(media.decode_audio(data, 'pcm_s16le', 384_000, 1, max_seconds=60))"),
    "audio encoder: AudioPlugin.encode, largest accepted file (decode, VAD, quality; inference stubbed)": (
        _PLUGIN.format(plugin="AudioPlugin") + "from bombs import flac_silence\n"
        "request = encoder_pb2.EncodeRequest(audio=encoder_pb2.Audio(data=flac_silence(59.9, rate=384_000, channels=8)))",
        "plugin.encode(request).quality"),
    "vision encoder: VisionPlugin.encode, 2 frames of 4096x4096 (decode, detection; inference stubbed)": (
        _PLUGIN.format(plugin="VisionPlugin") + "import io\nfrom PIL import Image\nbuf = io.BytesIO()\n"
        "Image.effect_noise((4096, 4096), 64).save(buf, format='PNG')\n"
        "request = encoder_pb2.EncodeRequest(frames=[encoder_pb2.Image(data=buf.getvalue())] * 2)",
        "plugin.encode(request)"),
    "vision: image bomb (RGB PNG 4096x4096 of one colour, 150 kB)": (
        "import io\nfrom PIL import Image\nfrom merc import media\nbuf = io.BytesIO()\n"
        "Image.new('RGB', (4096, 4096), (10, 200, 30)).save(buf, format='PNG')\ndata = buf.getvalue()",
        "media.decode_image(data, 4096 * 4096).shape"),
    "vision: PNG claiming 65535x65535 (header only)": (
        "import io, struct, zlib\nfrom PIL import Image\nfrom merc import media\nbuf = io.BytesIO()\n"
        "Image.new('L', (8, 8)).save(buf, format='PNG')\ndata = bytearray(buf.getvalue())\n"
        "data[16:24] = struct.pack('>II', 65535, 65535)\n"
        "data[29:33] = struct.pack('>I', zlib.crc32(bytes(data[12:29])))\ndata = bytes(data)",
        "media.decode_image(data, 4096 * 4096)"),
    "recording: FLAC bomb (10 h of silence) as a bare recording, limit 2 h": (
        "import pathlib, tempfile, av\nfrom bombs import flac_silence\nfrom merc.analyze import segment\n"
        "path = pathlib.Path(tempfile.mkdtemp()) / 'bomb.flac'\npath.write_bytes(flac_silence(10 * 3600))",
        "segment.utterances(path, 2 * 3600)"),
    "recording: MKV whose header claims 31,700 years (2 s real, silent)": (
        "import pathlib, tempfile, av\nfrom bombs import mkv_lying_duration\nfrom merc.analyze import segment\n"
        "path = mkv_lying_duration(pathlib.Path(tempfile.mkdtemp()) / 'lie.mkv')",
        "[(u.start_ms, u.end_ms) for u in segment.utterances(path, 2 * 3600)]"),
}


if __name__ == "__main__":
    for what, (setup, call) in WORST.items():
        print(f"{what:<72} {measure(setup, call, timeout=600)}")
