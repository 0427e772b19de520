"""gRPC front of the encoder: maps failures to precise status codes."""

from __future__ import annotations

import logging

import grpc

from merc.inference import InferenceUnavailable
from merc.pipeline.encoder import Encoder
from merc.pipeline.modalities import InvalidInput
from merc.v1 import encoder_pb2, encoder_pb2_grpc

log = logging.getLogger(__name__)


class EncoderServicer(encoder_pb2_grpc.EncoderServiceServicer):
    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder

    def Encode(self, request: encoder_pb2.EncodeRequest, context: grpc.ServicerContext) -> encoder_pb2.EncodeResponse:
        try:
            return self.encoder.encode(request)
        except InvalidInput as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(e))
        except PermissionError as e:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, str(e))
        except InferenceUnavailable as e:
            log.warning("inference unavailable: %s", e)
            context.set_trailing_metadata((("retry-after-ms", "1000"),))
            context.abort(grpc.StatusCode.UNAVAILABLE, f"inference backend unavailable, retry: {e}")
        except grpc.RpcError:
            raise
        except Exception as e:  # the bus or anything unexpected: never crash the server
            log.exception("encode failed")
            context.abort(grpc.StatusCode.UNAVAILABLE, f"could not publish the embedding, retry: {type(e).__name__}")
