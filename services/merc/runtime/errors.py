"""What a caller is told when its call fails: the reason, never the process's insides.

Status details are built from exception messages, and those can hold Python object reprs (with
heap addresses, which help whoever probes the process) or, at length, whatever a library put in
them. Every servicer's error mapping passes its message through ``public_message``. An exception
no mapping expected becomes INTERNAL with a generic message (``CatchAll``, on every MERC server),
logged with its type and where it was raised, not its message, which may quote the request.
"""

from __future__ import annotations

import logging
import re
import traceback

import grpc

from merc.runtime.interceptors import wrap_handler

log = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 500
INTERNAL_MESSAGE = "internal error; it has been logged"

_REPR_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")  # <foo.Bar object at 0x7f3a...>: keep the type, drop the address
_ADDRESS = re.compile(r"\b0x[0-9a-fA-F]{8,}\b")  # an address anywhere else (id=0x7f3a..., a pointer in a C message)
_SPACE = re.compile(r"\s+")


def public_message(detail: object) -> str:
    """A status detail safe to return: object reprs without addresses, one line, at most MAX_MESSAGE_CHARS."""
    text = _SPACE.sub(" ", _ADDRESS.sub("0x...", _REPR_ADDRESS.sub(">", str(detail)))).strip()
    if len(text) > MAX_MESSAGE_CHARS:
        text = text[: MAX_MESSAGE_CHARS - 3] + "..."
    return text


def _aborted(context: grpc.ServicerContext) -> bool:
    # context.abort() sets the status, then raises a bare Exception: that one is an answer, not a failure.
    code = context.code() if hasattr(context, "code") else None
    return isinstance(code, grpc.StatusCode) and code != grpc.StatusCode.OK


def _internal(context: grpc.ServicerContext, method: str, error: Exception) -> None:
    if _aborted(context):
        raise error
    where = "".join(traceback.format_tb(error.__traceback__))
    log.error("%s failed with an unexpected %s (message withheld: it may quote the request)\n%s", method, type(error).__name__, where)
    context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)


class CatchAll(grpc.ServerInterceptor):
    """Innermost on every server: an exception a servicer did not map is INTERNAL with a generic message
    (grpc would answer UNKNOWN with the exception's text)."""

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method

        def wrap(behaviour, _request_streaming, response_streaming):
            def run(request, context):
                try:
                    return behaviour(request, context)
                except Exception as e:
                    _internal(context, method, e)

            def run_stream(request, context):
                try:
                    yield from behaviour(request, context)
                except Exception as e:
                    _internal(context, method, e)

            return run_stream if response_streaming else run

        return wrap_handler(handler, wrap)
