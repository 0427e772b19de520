"""Text tiers: which weights the text encoder and the fusion load, chosen per deployment.

A tier is a text base (merc.models.text_encoder.BASES) with the MELD adapter trained on it, and the
fusion trained on that adapter's embeddings: the two change together, since the fusion reads the
encoder's vectors (384-d for MiniLM, 768-d for mpnet). The default tier's files are the version
folder itself (``text_encoder/1``, ``fusion/1``); another tier's sit in a subfolder named after it
(``text_encoder/1/mpnet``, ``fusion/1/mpnet``), so one repository and one image hold every tier.

Triton picks the tier with the config it loads (``--model-config-name=mpnet`` or ``gpu-mpnet``, whose
``TEXT_TIER`` parameter the adapters read); embedded mode with ``MERC_TEXT_TIER``.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT = "minilm"
TIERS = ("minilm", "mpnet")
# The served models whose weights differ by tier; every other model is the same in each.
MODELS = ("text_encoder", "fusion")
PARAMETER = "TEXT_TIER"


def check(tier: str) -> str:
    if tier not in TIERS:
        raise ValueError(f"unknown text tier {tier!r}; known: {', '.join(TIERS)}")
    return tier


def folder(version_dir: Path, tier: str = DEFAULT) -> Path:
    """Where ``tier``'s weights for the model in ``version_dir`` live."""
    return version_dir if check(tier) == DEFAULT else version_dir / tier


def results(reports: Path, tier: str = DEFAULT) -> Path:
    """Where ``tier``'s reports go under a reports folder (bench/results): its own subfolder, as for weights."""
    return reports if check(tier) == DEFAULT else reports / tier


def config_name(gpu: bool, tier: str = DEFAULT) -> str | None:
    """Triton's --model-config-name for a deployment (None: each model's config.pbtxt)."""
    name = "-".join(part for part in ("gpu" if gpu else "", "" if check(tier) == DEFAULT else tier) if part)
    return name or None
