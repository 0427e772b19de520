"""Encode one utterance with a plug-in and publish its embedding, keyed by tenant and conversation."""

from __future__ import annotations

import time

from merc.bus import Producer, topics
from merc.pipeline.events import EMBEDDING_SCHEMA
from merc.pipeline.modalities import InvalidInput, ModalityPlugin
from merc.pipeline.results import ref_problem
from merc.runtime import monitoring, privacy, security, telemetry
from merc.runtime.sealing import UNSEALED, Sealing
from merc.v1 import common_pb2, encoder_pb2, events_pb2


def validate_ref(request: encoder_pb2.EncodeRequest) -> None:
    ref = request.utterance
    if not ref.conversation_id:
        raise InvalidInput("utterance.conversation_id is required")
    problem = ref_problem(ref)
    if problem:
        raise InvalidInput(problem)
    if ref.end_ms and ref.end_ms < ref.start_ms:
        raise InvalidInput("utterance.end_ms is before start_ms")


class Encoder:
    def __init__(self, plugin: ModalityPlugin, producer: Producer, topic: str, tenant: str, pseudonym_secret: str = "",
                 sealing: Sealing = UNSEALED) -> None:
        """``sealing``: how record values are sealed for the topic (off: published as serialised)."""
        self.plugin = plugin
        self.producer = producer
        self.topic = topic
        self.default_tenant = tenant
        self.pseudonym_secret = pseudonym_secret
        self.sealing = sealing

    def embed(self, request: encoder_pb2.EncodeRequest) -> events_pb2.ModalityEmbedding:
        """Validate and encode; the media is not kept past this call."""
        validate_ref(request)
        if not self.plugin.has_input(request):
            raise InvalidInput(f"the request carries no {self.plugin.name} input")
        with monitoring.encode_stages(self.plugin.name):
            encoded = self.plugin.encode(request)
        ref = common_pb2.UtteranceRef()
        ref.CopyFrom(request.utterance)
        # The caller's API key decides the tenant; naming another one is refused (PermissionError).
        ref.tenant = security.check_tenant(ref.tenant, self.default_tenant)
        # Nothing downstream (Kafka, PostgreSQL, events) ever sees the caller's speaker id.
        ref.speaker = privacy.pseudonym(ref.speaker, ref.tenant, self.pseudonym_secret)
        return events_pb2.ModalityEmbedding(
            utterance=ref,
            modality=self.plugin.modality,
            vector=encoded.vector.tolist(),
            quality=encoded.quality,
            expected_modalities=list(request.expected_modalities) or [self.plugin.modality],
            encoder_model=encoded.model,
            encoder_version=encoded.version,
            sent_at_ms=request.sent_at_ms or int(time.time() * 1000),
        )

    def publish(self, embedding: events_pb2.ModalityEmbedding) -> None:
        """Publish and wait for the broker's acknowledgement (DeliveryFailed: not published, retry)."""
        ref = embedding.utterance
        attributes = {"messaging.system": "kafka", "messaging.destination.name": self.topic, **telemetry.utterance_attributes(embedding)}
        # The record carries this span's traceparent: fusion continues the utterance's trace from it.
        with telemetry.span(f"{self.topic} publish", "producer", attributes), monitoring.encoder_stage(self.plugin.name, "publish"):
            headers = telemetry.with_trace_headers((("schema", EMBEDDING_SCHEMA), ("tenant", ref.tenant.encode())))
            key = topics.conversation_key(ref.tenant, ref.conversation_id)
            delivery = self.producer.send(self.topic, key, self.sealing.seal(self.topic, key, embedding.SerializeToString()), headers)
            # Acknowledge only what the broker has accepted: the caller drops its media once answered.
            # A refused or expired record raises DeliveryFailed, which the servicer answers UNAVAILABLE.
            delivery.wait()

    def encode(self, request: encoder_pb2.EncodeRequest) -> encoder_pb2.EncodeResponse:
        embedding = self.embed(request)
        self.publish(embedding)
        return encoder_pb2.EncodeResponse(
            modality=embedding.modality,
            dimensions=len(embedding.vector),
            quality=embedding.quality,
            encoder_model=embedding.encoder_model,
        )
