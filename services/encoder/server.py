"""gRPC front of the encoder: maps failures to precise status codes."""

from __future__ import annotations

import logging
import threading

import grpc

from merc.bus import DeliveryFailed
from merc.inference import InferenceUnavailable
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import InvalidInput, ModalityPlugin
from merc.runtime.errors import public_message
from merc.v1 import encoder_pb2, encoder_pb2_grpc

log = logging.getLogger(__name__)

RETRY_AFTER = (("retry-after-ms", "1000"),)


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def Encode(self, request: encoder_pb2.EncodeRequest, context: grpc.ServicerContext) -> encoder_pb2.EncodeResponse:
        return self._answer(context, self.encoder.encode, request)

    def Transcribe(self, request: encoder_pb2.TranscribeRequest, context: grpc.ServicerContext) -> encoder_pb2.TranscribeResponse:
        transcribe = getattr(self.encoder.plugin, "transcribe", None)
        if transcribe is None:
            context.abort(grpc.StatusCode.UNIMPLEMENTED, f"the {self.encoder.plugin.name} encoder does not transcribe; the audio encoder does")
        return self._answer(context, transcribe, request)

    def _answer(self, context: grpc.ServicerContext, call, request):
        # Anything not mapped here (a bug) is INTERNAL with a generic message: merc.runtime.errors.CatchAll.
        try:
            return call(request)
        except InvalidInput as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, public_message(e))
        except PermissionError as e:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, public_message(e))
        except InferenceUnavailable as e:
            log.warning("inference unavailable: %s", e)
            context.set_trailing_metadata(RETRY_AFTER)
            context.abort(grpc.StatusCode.UNAVAILABLE, public_message(f"inference backend unavailable, retry: {e}"))
        except DeliveryFailed as e:
            # Not on the broker, so not done: the caller keeps its media and sends the utterance again
            # (fusion drops a copy that did get through after all as a duplicate).
            log.warning("embedding not published: %s", e)
            context.set_trailing_metadata(RETRY_AFTER)
            context.abort(grpc.StatusCode.UNAVAILABLE, public_message(f"the embedding was not published, retry: {e}"))


def warm_up(modality: ModalityPlugin, stopped: threading.Event, first_delay_s: float = 0.5, max_delay_s: float = 10.0) -> bool:
    """One warm-up call, retried until the inference backend answers it (False if ``stopped`` first).

    SERVING waits for it: an encoder that cannot reach its models must not look ready while every
    call fails. The models' own warm-up is Triton's ``model_warmup`` (model_repository/*/config.pbtxt),
    run before Triton reports them ready; this call proves the encoder reaches its model and warms the
    encoder's own path to it (its client's connection, media decoding, the in-process model when embedded).
    """
    delay = first_delay_s
    while not stopped.is_set():
        try:
            modality.encode(modality.warmup_request())
            return True
        except InferenceUnavailable as e:
            log.warning("warm-up: inference not answering (%s); not serving yet, retrying in %.1f s", e, delay)
        stopped.wait(delay)
        delay = min(delay * 2, max_delay_s)
    return False
