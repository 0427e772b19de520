"""Build a demo "call" video from the development data, to try `merc analyze` on a bare recording.

Three RAVDESS utterances (validation actors, never trained on) with a second of silence between
them, and for each a FER2013 publictest face of the same emotion, upscaled into a 320x240 frame:

    .venv/bin/python examples/demo_video.py /tmp/call.mp4
    .venv/bin/merc analyze /tmp/call.mp4

Needs the RAVDESS corpus (MERC_DATA_DIR). The file stays on your machine; do not publish it
(RAVDESS is CC BY-NC-SA, FER2013 research use).
"""

from __future__ import annotations

import sys
import tarfile

import av
import numpy as np
import soundfile as sf
from PIL import Image

from merc.data.meld import data_root

# (RAVDESS emotion code, FER2013 folder) per utterance
SCRIPT = [("05", "angry"), ("03", "happy"), ("04", "sad")]
RATE, FPS, GAP_S = 16_000, 10, 1.0


def main(out: str) -> None:
    root = data_root()
    tar = tarfile.open(root / "fer2013" / "publictest.tar")
    members = [m for m in tar if m.isfile()]
    wave, frames, truth = [np.zeros(int(GAP_S * RATE), np.float32)], [], []
    for k, (code, folder) in enumerate(SCRIPT):
        clip = sorted((root / "ravdess-speech-16k").glob(f"Actor_19/03-01-{code}-02-01-01-19.*"))[0]
        x, sr = sf.read(clip, dtype="float32", always_2d=True)
        assert sr == RATE
        face_member = [m for m in members if f"/{folder}/" in m.name][3 * k + 1]
        face = np.asarray(Image.open(tar.extractfile(face_member)).convert("L").resize((160, 160)))
        frame = np.full((240, 320), 110, np.uint8)
        frame[40:200, 80:240] = face
        wave += [x.mean(axis=1), np.zeros(int(GAP_S * RATE), np.float32)]
        start = sum(len(w) for w in wave[:-2]) / RATE
        truth.append((round(start, 2), round(start + len(x) / RATE, 2), folder))
        frames.append((start, start + len(x) / RATE, frame))
    audio = np.concatenate(wave)
    seconds = len(audio) / RATE
    with av.open(out, "w") as container:
        vs = container.add_stream("mpeg4", rate=FPS)
        vs.width, vs.height, vs.pix_fmt = 320, 240, "yuv420p"
        aus = container.add_stream("aac", rate=RATE, layout="mono")
        blank = np.full((240, 320), 110, np.uint8)
        for i in range(int(seconds * FPS)):
            t = i / FPS
            img = next((f for a, b, f in frames if a <= t < b), blank)
            for packet in vs.encode(av.VideoFrame.from_ndarray(np.repeat(img[:, :, None], 3, 2), format="rgb24")):
                container.mux(packet)
        container.mux(vs.encode(None))
        for i in range(0, len(audio), 1024):
            f = av.AudioFrame.from_ndarray(audio[None, i : i + 1024], format="flt", layout="mono")
            f.sample_rate = RATE
            for packet in aus.encode(f):
                container.mux(packet)
        container.mux(aus.encode(None))
    print(f"wrote {out}: {seconds:.1f} s; utterances (start s, end s, emotion): {truth}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "call.mp4")
