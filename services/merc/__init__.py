"""MERC: multimodal emotion recognition in conversation (shared library)."""

__version__ = "0.1.0"
