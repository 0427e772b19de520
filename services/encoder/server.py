"""gRPC front of the encoder: maps failures to precise status codes."""

from __future__ import annotations

import logging

import grpc

from merc.bus import DeliveryFailed
from merc.inference import InferenceUnavailable
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import InvalidInput
from merc.runtime.errors import public_message
from merc.v1 import encoder_pb2, encoder_pb2_grpc

log = logging.getLogger(__name__)

RETRY_AFTER = (("retry-after-ms", "1000"),)


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def Encode(self, request: encoder_pb2.EncodeRequest, context: grpc.ServicerContext) -> encoder_pb2.EncodeResponse:
        # Anything not mapped here (a bug) is INTERNAL with a generic message: merc.runtime.errors.CatchAll.
        try:
            return self.encoder.encode(request)
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
