"""The client the README describes: retry what the platform asks to be retried, take ALREADY_EXISTS as done.

Shared by the fault tests on the local stack and the cluster tests, which count events exactly once
while they break components under this client.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def analyze_until_accepted(gateway, request, call_timeout_s: float, give_up_s: float,
                           on_retry: Callable[[], None] = lambda: None) -> None:
    """AnalyzeUtterance until the gateway accepts it, retrying with backoff; raises what is not retryable."""
    delay, deadline = 0.2, time.monotonic() + give_up_s
    while True:
        try:
            gateway.AnalyzeUtterance(request, timeout=call_timeout_s)
            return
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.ALREADY_EXISTS:
                return  # an earlier attempt got through and its event is stored (merc.pipeline.resend)
            if e.code() not in RETRYABLE or time.monotonic() > deadline:
                raise
            on_retry()
            time.sleep(delay)
            delay = min(delay * 2, 3.0)
