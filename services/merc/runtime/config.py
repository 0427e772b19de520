"""All runtime configuration, read from the environment in one place.

Every variable is MERC_<FIELD> (upper case). The Helm chart, compose file and
deploy/local scripts set exactly these names.
"""

from __future__ import annotations

import socket
from functools import lru_cache
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from merc.models import tiers


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
    # How long a published record may take to be acknowledged by the broker (retries included) before the
    # caller is answered UNAVAILABLE; under the gateway's 30 s call to an encoder, so the client hears "retry".
    kafka_delivery_timeout_s: float = Field(default=10.0, gt=0)
    # The largest record a producer sends (the broker's message.max.bytes must allow it): fusion refuses to
    # start when its largest possible join-state record would not fit (merc.pipeline.state_size).
    kafka_max_request_bytes: int = Field(default=1024 * 1024, ge=64 * 1024)

    # PostgreSQL (or any SQLAlchemy URL; the embedded mode uses SQLite)
    database_url: str = "postgresql+psycopg://merc:merc@127.0.0.1:25432/merc"

    # Inference: Triton over KServe v2 gRPC, or the same model code in-process.
    inference: Literal["triton", "local"] = "triton"
    triton_url: str = "127.0.0.1:18001"
    triton_timeout_s: float = 10.0
    model_repository: str | None = None
    # The text tier embedded mode loads (merc.models.tiers): minilm, the CPU default, or mpnet. Triton chooses
    # its tier with the config it loads (the chart's triton.textTier), not with this.
    text_tier: str = tiers.DEFAULT
    # In-process inference (embedded mode) on a laptop; deployments run one thread per process (the chart sets 1).
    torch_threads: int = 2
    # The corpora `merc train` and `merc eval` read (MELD, RAVDESS, FER2013); unset: a shared/data folder beside the checkout.
    data_dir: str | None = None

    # The address every gRPC service listens on: loopback for a laptop; 0.0.0.0 in a container or pod,
    # where probes, Services and the other pods must reach it (the chart and compose set that).
    bind_host: str = "127.0.0.1"
    # Each service's Prometheus /metrics (HTTP, on bind_host); 0 = off. Services sharing a host need
    # distinct ones (deploy/local/services.sh passes 29050 gateway, 29061-29063 encoders, 29070 fusion).
    metrics_port: int = 29090

    # Encoder service: one program, one modality per deployment.
    encoder_modality: Literal["text", "audio", "vision"] = "text"
    encoder_port: int = 28061
    max_text_chars: int = 2000
    max_audio_seconds: float = 60.0
    max_frames: int = 32
    max_image_pixels: int = 4096 * 4096
    # The largest gRPC message any service accepts (32 frames of HD JPEG fit; gRPC's own default, 4 MiB, does not).
    max_message_bytes: int = 32 * 1024 * 1024
    # gRPC worker threads per service; a gateway stream holds one while open.
    grpc_workers: int = 32
    # Calls a gRPC server holds at once, running or queued for a worker (health checks included); more are
    # answered RESOURCE_EXHAUSTED at once instead of queueing without bound.
    max_concurrent_rpcs: int = Field(default=128, ge=1)
    # An encoder closes each client connection after this long (in-flight calls get a grace of as long
    # again): the gateway then re-resolves the encoder's name, so a replica added by scaling gets calls
    # within this time instead of never. 0 = connections live for ever.
    encoder_connection_age_s: float = Field(default=30.0, ge=0)
    # Frames sampled per utterance when `merc analyze` cuts a video file.
    video_frames: int = 5
    # The longest recording `merc analyze` decodes (a bare file, or a manifest's `video`): its audio track
    # is held whole at 16 kHz, 64 kB a second (461 MB at 2 h), and decoding stops past this.
    max_recording_seconds: float = 2 * 3600.0

    # Gateway. Streams end after stream_idle_s without an event; at most max_streams are open at
    # once (more get RESOURCE_EXHAUSTED), so idle or slow clients cannot take every worker thread.
    stream_idle_s: float = 30.0
    max_streams: int = Field(default=16, ge=1)
    # One tenant's share of max_streams (gRPC streams and the web page's event streams, each), so no tenant
    # can take every slot; 0 = all of them without API keys (one tenant), else a quarter (at least 1).
    max_streams_per_tenant: int = Field(default=0, ge=0)
    # Per stream: distinct conversations it may send to, and utterances accepted but still awaiting their
    # event; past either the utterance is rejected (RESOURCE_EXHAUSTED) instead of held.
    max_stream_conversations: int = Field(default=64, ge=1)
    max_stream_pending: int = Field(default=256, ge=1)
    gateway_port: int = 28050
    # An utterance that comes with audio and no text gets its words from the audio encoder's Transcribe
    # (the Triton model `transcriber`, Whisper base) and uses them as its text, context and all. Off by
    # default: a short utterance costs about 2 s of 2 CPU cores (bench/results/transcription_serving.md). The
    # transcript stays in the gateway's memory like a client's text; only the caller gets it back.
    transcribe_audio: bool = False
    # The language callers speak (ISO 639-1, e.g. "en"); empty: Whisper detects it per utterance, which
    # can miss on a short one.
    transcription_language: str = Field(default="", pattern=r"^([a-z]{2,3})?$")
    # The gateway's web page (conversation timeline, live) and its JSON/event-stream API over HTTP on
    # bind_host (HTTPS with the TLS settings below); 0 = off. merc.gateway.web.
    http_port: int = 28080
    # Connections the web page's server serves at once, one thread each (event streams included); more
    # are answered 503 and closed.
    http_max_connections: int = Field(default=64, ge=1)
    # host:port of each encoder. The gateway spreads calls over every address the name resolves to
    # (round robin): in Kubernetes a headless Service, one address per ready replica.
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
    # Utterances waiting in the join per conversation; one more releases the oldest at once, degraded
    # (outcome "overflow"). Bounds the memory and the join-state record of a conversation.
    max_pending_utterances: int = Field(default=64, ge=1)
    # A conversation with no embedding for this long leaves fusion's memory (join state and context; its
    # state record gets a tombstone); an utterance after that reloads its context from the store.
    conversation_idle_s: float = Field(default=15 * 60.0, gt=0)

    tenant: str = "default"

    # Security (merc.runtime.security). API keys as "tenant:sha256hex" entries; none = authentication off.
    api_keys: str = ""
    api_keys_file: str | None = None
    # The key this process presents when it calls a MERC service (`merc analyze --remote`, bench).
    api_key: str = ""
    # Serve gRPC over TLS (both set); require client certificates too (mutual TLS) with a client CA.
    tls_cert_file: str | None = None
    tls_key_file: str | None = None
    tls_client_ca_file: str | None = None
    # Calling other MERC services over TLS: the CA to trust, and this service's client certificate.
    tls_ca_file: str | None = None
    tls_client_cert_file: str | None = None
    tls_client_key_file: str | None = None
    # Privacy (merc.runtime.privacy): speaker ids are pseudonymised with a per-tenant key derived from this
    # secret before anything is published; empty = speaker ids pass through unchanged.
    pseudonym_secret: str = ""
    # Embedding records and the join state on Kafka sealed per tenant (merc.runtime.sealing): "id:secret"
    # entries, comma-separated, the first seals and all open (rotation); empty = published in the clear.
    embedding_keys: str = ""
    # Conversations whose last result is older than this are deleted by `merc retention`; 0 = keep.
    retention_days: float = 0
    log_level: str = "INFO"
    # json: one JSON object per line with trace_id/span_id of the current span (merc.runtime.telemetry.JsonFormatter).
    log_format: Literal["text", "json"] = "text"
    # OTLP/gRPC trace collector, e.g. http://otel-collector:4317 (https:// for TLS); empty = no export.
    otlp_endpoint: str = ""
    # Share of new traces kept (a caller's sampled/unsampled decision is followed); 1.0 = all.
    trace_sample_ratio: float = Field(default=1.0, ge=0.0, le=1.0)

    @field_validator("text_tier")
    @classmethod
    def _known_tier(cls, tier: str) -> str:
        return tiers.check(tier)

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}.{name}"


@lru_cache(maxsize=1)
def settings() -> Settings:
    return Settings()
