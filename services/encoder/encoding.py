"""Encode one utterance with a plug-in and publish its embedding, keyed by conversation."""

from __future__ import annotations

import time

from merc.bus import Producer
from merc.encoder.plugins import InvalidInput, ModalityPlugin
from merc.v1 import common_pb2, encoder_pb2, events_pb2

SCHEMA = b"merc.v1.ModalityEmbedding"
MAX_ID = 128


def validate_ref(request: encoder_pb2.EncodeRequest) -> None:
    ref = request.utterance
    if not ref.conversation_id:
        raise InvalidInput("utterance.conversation_id is required")
    for name, value in (("conversation_id", ref.conversation_id), ("tenant", ref.tenant), ("speaker", ref.speaker)):
        if len(value) > MAX_ID:
            raise InvalidInput(f"utterance.{name} is longer than {MAX_ID} characters")
    if ref.end_ms and ref.end_ms < ref.start_ms:
        raise InvalidInput("utterance.end_ms is before start_ms")


class Encoder:
    def __init__(self, plugin: ModalityPlugin, producer: Producer, topic: str, tenant: str) -> None:
        self.plugin = plugin
        self.producer = producer
        self.topic = topic
        self.default_tenant = tenant

    def embed(self, request: encoder_pb2.EncodeRequest) -> events_pb2.ModalityEmbedding:
        """Validate and encode; the media is not kept past this call."""
        validate_ref(request)
        if not self.plugin.has_input(request):
            raise InvalidInput(f"the request carries no {self.plugin.name} input")
        encoded = self.plugin.encode(request)
        ref = common_pb2.UtteranceRef()
        ref.CopyFrom(request.utterance)
        ref.tenant = ref.tenant or self.default_tenant
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
        ref = embedding.utterance
        headers = (("schema", SCHEMA), ("tenant", ref.tenant.encode()))
        self.producer.send(self.topic, ref.conversation_id.encode(), embedding.SerializeToString(), headers)
        # Acknowledge only what the broker has: the caller may drop its media now.
        self.producer.flush()

    def encode(self, request: encoder_pb2.EncodeRequest) -> encoder_pb2.EncodeResponse:
        embedding = self.embed(request)
        self.publish(embedding)
        return encoder_pb2.EncodeResponse(
            modality=embedding.modality,
            dimensions=len(embedding.vector),
            quality=embedding.quality,
            encoder_model=embedding.encoder_model,
        )
