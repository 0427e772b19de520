"""All runtime configuration, read from the environment in one place.

Every variable is MERC_<FIELD> (upper case). The Helm chart, compose file and
deploy/local scripts set exactly these names.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MERC_", extra="ignore")

    # Kafka
    kafka_bootstrap: str = "127.0.0.1:19092"
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = None
    kafka_ssl_cafile: str | None = None
    topic_prefix: str = "merc"

    # PostgreSQL (or any SQLAlchemy URL; the embedded mode uses SQLite)
    database_url: str = "postgresql+psycopg://merc:merc@127.0.0.1:25432/merc"

    # Inference: Triton over KServe v2 gRPC, or the same model code in-process.
    inference: Literal["triton", "local"] = "triton"
    triton_url: str = "127.0.0.1:18001"
    triton_timeout_s: float = 10.0
    model_repository: str | None = None
    torch_threads: int = 1

    # The address every gRPC service listens on: loopback for a laptop; 0.0.0.0 in a container or pod,
    # where probes, Services and the other pods must reach it (the chart and compose set that).
    bind_host: str = "127.0.0.1"

    # Encoder service: one program, one modality per deployment.
    encoder_modality: Literal["text", "audio", "vision"] = "text"
    encoder_port: int = 28061
    max_text_chars: int = 2000
    max_audio_seconds: float = 60.0
    max_frames: int = 32
    max_image_pixels: int = 4096 * 4096
    # Frames sampled per utterance when `merc analyze` cuts a video file.
    video_frames: int = 5

    # Gateway
    gateway_port: int = 28050
    text_encoder_url: str = "127.0.0.1:28061"
    audio_encoder_url: str = "127.0.0.1:28062"
    vision_encoder_url: str = "127.0.0.1:28063"

    # Fusion / context service
    fusion_port: int = 28070
    fusion_instance: str = Field(default_factory=socket.gethostname)
    fusion_group: str = "merc-fusion"
    join_window_ms: int = 1500
    emit_revisions: bool = True
    mood_decay: float = 0.7

    tenant: str = "default"
    log_level: str = "INFO"

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()
