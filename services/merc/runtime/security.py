"""Who may call, over what: per-tenant API keys (stored hashed) checked on every entry point, and
gRPC over TLS (mutual TLS when a client CA is configured). Certificates and key files come from
paths (Kubernetes Secrets mounted as files).

API keys: a caller sends ``x-api-key: <key>`` (or ``authorization: Bearer <key>``) metadata. The
services hold only SHA-256 hashes, ``MERC_API_KEYS="tenant-a:<sha256 hex>,tenant-b:<sha256 hex>"``
or one ``tenant:<sha256 hex>`` per line in ``MERC_API_KEYS_FILE``; ``merc keys new TENANT`` makes a
key and its line. Keys are random 256-bit tokens, so an unsalted hash is enough (a salt protects
guessable passwords, not random keys). With no keys configured, authentication is off and every
call acts for ``MERC_TENANT`` (the laptop mode).

The authenticated tenant is the only tenant a call may act for: a request naming another one is
refused, and reads are scoped to it.
"""

from __future__ import annotations

import contextvars
import hashlib
import hmac
import secrets
from collections.abc import Callable
from pathlib import Path

import grpc

from merc.pipeline.results import MAX_TENANT_CHARS
from merc.runtime.interceptors import HEALTH_PREFIX, wrap_handler

_tenant: contextvars.ContextVar[str | None] = contextvars.ContextVar("merc_tenant", default=None)
_key: contextvars.ContextVar[str | None] = contextvars.ContextVar("merc_api_key", default=None)


class KeyConfigError(ValueError):
    """The API key configuration cannot be read."""


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return "merc_" + secrets.token_urlsafe(32)


def _entries(text: str, by_line: bool):
    """(where, entry) for each non-blank, non-comment entry: "line N" in a file, "entry N" in a
    comma-separated list (MERC_API_KEYS)."""
    n = 0
    for number, line in enumerate(text.splitlines(), 1):
        for entry in line.split(","):
            entry = entry.strip()
            if not entry or entry.startswith("#"):
                continue
            n += 1
            yield (f"line {number}" if by_line else f"entry {n}"), entry


def parse_keys(text: str, source: str, into: dict[str, str] | None = None, by_line: bool = False) -> dict[str, str]:
    """``tenant:sha256hex`` entries separated by commas or newlines -> {hash: tenant}, added to ``into``.

    Checked when loaded, so a bad file stops the service at start instead of failing calls later:
    a tenant the store could not hold (empty, over MAX_TENANT_CHARS, a NUL), a hash that is not 64
    hex digits, and one hash listed for two tenants (a key must name one tenant) are refused, naming
    the line."""
    out = {} if into is None else into
    for where, entry in _entries(text, by_line):
        tenant, _, digest = entry.partition(":")
        tenant, digest = tenant.strip(), digest.strip().lower()
        problem = None
        if not tenant:
            problem = "the tenant is empty"
        elif len(tenant) > MAX_TENANT_CHARS:
            problem = f"the tenant is longer than {MAX_TENANT_CHARS} characters"
        elif "\x00" in tenant:
            problem = "the tenant contains a NUL character"
        elif len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            problem = "the hash is not 64 hex digits"
        elif out.get(digest, tenant) != tenant:
            problem = f"this key's hash is already listed for tenant {out[digest]!r}"
        if problem:
            raise KeyConfigError(f"{source}: {where}: {problem}; expected 'tenant:<64 hex digits of sha256(key)>'")
        out[digest] = tenant
    return out


class ApiKeys:
    def __init__(self, hashes: dict[str, str]) -> None:
        self._hashes = hashes

    @classmethod
    def from_settings(cls, settings) -> ApiKeys:
        hashes = parse_keys(settings.api_keys or "", "MERC_API_KEYS")
        if settings.api_keys_file:
            path = Path(settings.api_keys_file)
            try:
                parse_keys(path.read_text(), f"MERC_API_KEYS_FILE {path}", into=hashes, by_line=True)  # a hash in both: one tenant
            except OSError as e:
                raise KeyConfigError(f"MERC_API_KEYS_FILE {path}: {e.strerror}") from None
        return cls(hashes)

    @property
    def enabled(self) -> bool:
        return bool(self._hashes)

    def tenant_for(self, key: str) -> str | None:
        digest = hash_key(key)
        for known, tenant in self._hashes.items():
            if hmac.compare_digest(known, digest):
                return tenant
        return None


def presented_key(metadata) -> str | None:
    for k, v in metadata or ():
        if k == "x-api-key":
            return v
        if k == "authorization" and v.lower().startswith("bearer "):
            return v[7:].strip()
    return None


class _Undecodable:
    """What a request that is not a valid protobuf of the method's type deserialises to."""


UNDECODABLE = _Undecodable()
UNDECODABLE_MESSAGE = "the request is not a valid protobuf message for this method"


def _lenient(deserializer: Callable | None) -> Callable | None:
    # grpc answers a deserializer's exception with INTERNAL before any handler runs; bad input
    # deserves INVALID_ARGUMENT, so the handler is told and says so.
    if deserializer is None:
        return None

    def parse(raw: bytes):
        try:
            return deserializer(raw)
        except Exception:
            return UNDECODABLE

    return parse


def _refuse_undecodable(request, context) -> None:
    if request is UNDECODABLE:
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, UNDECODABLE_MESSAGE)


def _checked_stream(requests, context):
    for request in requests:
        _refuse_undecodable(request, context)
        yield request


def _checked(request, context):
    """The request, or the request stream, with undecodable messages refused."""
    _refuse_undecodable(request, context)
    return _checked_stream(request, context) if hasattr(request, "__next__") else request


def _as(tenant: str, key: str | None):
    """wrap_handler's wrap: run the handler with the caller's tenant (and key, for calls onward) in context."""

    def wrap(behaviour, _request_streaming, response_streaming):
        def run(request, context):
            request = _checked(request, context)
            t1, t2 = _tenant.set(tenant), _key.set(key)
            try:
                return behaviour(request, context)
            finally:
                _tenant.reset(t1)
                _key.reset(t2)

        def run_stream(request, context):
            request = _checked(request, context)
            t1, t2 = _tenant.set(tenant), _key.set(key)
            try:
                yield from behaviour(request, context)
            finally:
                _tenant.reset(t1)
                _key.reset(t2)

        return run_stream if response_streaming else run

    return wrap


def _deny(code: grpc.StatusCode, message: str):
    def wrap(*_):
        def abort(_request, context):
            context.abort(code, message)

        return abort

    return wrap


class AuthInterceptor(grpc.ServerInterceptor):
    """Every RPC but health checks needs a known key; the handler then runs as the key's tenant."""

    def __init__(self, keys: ApiKeys, default_tenant: str) -> None:
        self.keys = keys
        self.default_tenant = default_tenant

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(HEALTH_PREFIX):
            return handler
        key = presented_key(handler_call_details.invocation_metadata)
        if not self.keys.enabled:
            tenant = self.default_tenant
        elif key is None:
            return wrap_handler(handler, _deny(grpc.StatusCode.UNAUTHENTICATED, "an API key is required: send it as 'x-api-key' metadata"))
        else:
            tenant = self.keys.tenant_for(key)
            if tenant is None:
                return wrap_handler(handler, _deny(grpc.StatusCode.UNAUTHENTICATED, "unknown API key"))
        return wrap_handler(handler, _as(tenant, key), request_deserializer=_lenient(handler.request_deserializer))


def tenant(default: str) -> str:
    """The tenant the current call acts for (the authenticated one; ``default`` outside a call)."""
    return _tenant.get() or default


def forwarded_metadata() -> tuple[tuple[str, str], ...]:
    """The caller's key, for the calls a service makes on its behalf (gateway -> encoders)."""
    key = _key.get()
    return (("x-api-key", key),) if key else ()


def check_tenant(requested: str, default: str) -> str:
    """The tenant a request may act for: its own, or refused if it names another (PermissionError)."""
    actual = tenant(default)
    if requested and requested != actual:
        raise PermissionError(f"this API key acts for tenant {actual!r}, not {requested!r}")
    return actual


# TLS -------------------------------------------------------------------------------------------


def _read(path: str | None, what: str) -> bytes | None:
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as e:
        raise ValueError(f"{what} {path}: {e.strerror}") from None


def server_credentials(settings) -> grpc.ServerCredentials | None:
    """TLS when MERC_TLS_CERT_FILE/MERC_TLS_KEY_FILE are set; client certificates required when
    MERC_TLS_CLIENT_CA_FILE is set too (mutual TLS). None: plaintext."""
    cert, key = _read(settings.tls_cert_file, "MERC_TLS_CERT_FILE"), _read(settings.tls_key_file, "MERC_TLS_KEY_FILE")
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise ValueError("TLS needs both MERC_TLS_CERT_FILE and MERC_TLS_KEY_FILE")
    client_ca = _read(settings.tls_client_ca_file, "MERC_TLS_CLIENT_CA_FILE")
    return grpc.ssl_server_credentials([(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None)


def channel(target: str, settings, options: list | None = None) -> grpc.Channel:
    """A channel to another MERC service: TLS when MERC_TLS_CA_FILE is set (with this service's
    client certificate for mutual TLS when MERC_TLS_CLIENT_CERT_FILE/KEY_FILE are set)."""
    ca = _read(settings.tls_ca_file, "MERC_TLS_CA_FILE")
    if ca is None:
        return grpc.insecure_channel(target, options=options)
    creds = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=_read(settings.tls_client_key_file, "MERC_TLS_CLIENT_KEY_FILE"),
        certificate_chain=_read(settings.tls_client_cert_file, "MERC_TLS_CLIENT_CERT_FILE"),
    )
    return grpc.secure_channel(target, creds, options=options)


def interceptors(settings) -> list[grpc.ServerInterceptor]:
    return [AuthInterceptor(ApiKeys.from_settings(settings), settings.tenant)]


def server_options(settings) -> dict:
    """Keyword arguments for merc.runtime.serving.Server: TLS credentials, the auth interceptor, limits."""
    return {"credentials": server_credentials(settings), "interceptors": interceptors(settings),
            "workers": settings.grpc_workers, "max_message_bytes": settings.max_message_bytes,
            "max_concurrent_rpcs": settings.max_concurrent_rpcs}
