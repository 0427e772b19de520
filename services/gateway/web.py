"""The gateway's web page: a conversation's emotions on a timeline, live.

HTTP on MERC_HTTP_PORT (0 = off), on MERC_BIND_HOST; HTTPS with the gRPC server's certificate when
MERC_TLS_CERT_FILE/KEY_FILE are set (client certificates required when MERC_TLS_CLIENT_CA_FILE is).
The standard library's ThreadingHTTPServer is enough for one page and three small endpoints:

  GET /                                   the page (merc/web/, inlined by merc.analyze.timeline.render_page)
  GET /api/conversations                  the caller's tenant's conversations the hub saw lately
  GET /api/conversations/ID               the stored timeline: latest revision of each utterance
  GET /api/conversations/ID/events        server-sent events from the EventHub, one JSON per event

Auth is the gRPC API's: with API keys configured every /api request needs a key (``x-api-key`` or
``Authorization: Bearer``; 401 without or with an unknown one) and sees only the key's tenant
(another tenant's conversation is 404, like one that does not exist). The browser's EventSource
cannot set headers, so the event stream also takes ``?key=KEY``. The trade-off: a key in a URL can
end up in proxy logs and browser history, which a header does not. This server never logs query
strings and sends ``Referrer-Policy: no-referrer``; serve it over TLS, and prefer the header from
any client that can set one. Without keys configured, every request acts for MERC_TENANT.

Each event stream holds one thread: at most ``max_streams`` are open at once (more get 503), each
sends a keep-alive comment every ``keepalive_s`` and ends after ``idle_s`` without an event (the
page then offers to resume).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import queue
import socket
import ssl
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from merc.analyze import timeline
from merc.gateway.hub import EventHub
from merc.pipeline.events import to_event
from merc.pipeline.labels import LABELS
from merc.runtime import security
from merc.store import Store

log = logging.getLogger(__name__)


class WebApp:
    """What the handlers need: the store, the hub, the keys; and the page, rendered once."""

    def __init__(self, store: Store, hub: EventHub | None, settings, keepalive_s: float = 15.0, idle_s: float = 600.0,
                 max_streams: int | None = None) -> None:
        self.store = store
        self.hub = hub
        self.settings = settings
        self.keys = security.ApiKeys.from_settings(settings)
        self.keepalive_s = keepalive_s
        self.idle_s = idle_s
        self.streams = threading.BoundedSemaphore(max_streams or settings.max_streams)
        self.stopping = threading.Event()
        self.page = timeline.render_page({"mode": "live", "auth": self.keys.enabled, "labels": list(LABELS)}).encode()
        self.csp = content_security_policy()

    def tenant(self, headers, query: dict) -> str | None:
        """The tenant a request acts for; None when keys are configured and it has no known one."""
        if not self.keys.enabled:
            return self.settings.tenant
        key = security.presented_key([(k.lower(), v) for k, v in headers.items()])
        if key is None and query.get("key"):
            key = query["key"][0]
        return self.keys.tenant_for(key) if key else None


def content_security_policy() -> str:
    """Only the page's own inline script and style run (by hash); it talks to this server only."""

    def digest(name: str) -> str:
        return "'sha256-" + base64.b64encode(hashlib.sha256(timeline.asset(name).encode()).digest()).decode() + "'"

    return (f"default-src 'none'; script-src {digest('timeline.js')}; style-src {digest('timeline.css')}; "
            "connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Handler(BaseHTTPRequestHandler):
    server_version = "merc-gateway"
    timeout = 60  # a socket read or write stuck this long ends the request (slow or vanished clients)
    app: WebApp  # set on the subclass that serve() makes

    # ---- routing -----------------------------------------------------------------------------

    def do_GET(self) -> None:  # http.server's naming
        url = urlsplit(self.path)
        parts = [unquote(p) for p in url.path.split("/") if p]
        query = parse_qs(url.query)
        if parts in ([], ["index.html"]):
            return self._send(HTTPStatus.OK, self.app.page, "text/html; charset=utf-8", {"Content-Security-Policy": self.app.csp})
        if parts == ["healthz"]:
            return self._send(HTTPStatus.OK, b"ok\n", "text/plain; charset=utf-8")
        if parts == ["favicon.ico"]:  # browsers ask; there is none
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if parts[:2] != ["api", "conversations"] or len(parts) > 4 or (len(parts) == 4 and parts[3] != "events"):
            return self._error(HTTPStatus.NOT_FOUND, "no such page")
        tenant = self.app.tenant(self.headers, query)
        if tenant is None:
            return self._error(HTTPStatus.UNAUTHORIZED, "an API key is required: send it as 'x-api-key' (or ?key= for an event stream)",
                               {"WWW-Authenticate": 'Bearer realm="merc"'})
        if len(parts) == 2:
            return self._recent(tenant)
        if not parts[2]:
            return self._error(HTTPStatus.NOT_FOUND, "no conversation id")
        if len(parts) == 3:
            return self._timeline(tenant, parts[2])
        return self._events(tenant, parts[2])

    def _not_allowed(self) -> None:
        self._error(HTTPStatus.METHOD_NOT_ALLOWED, "GET only", {"Allow": "GET"})

    do_POST = do_PUT = do_DELETE = do_PATCH = _not_allowed  # read-only: nothing to change here

    # ---- endpoints ---------------------------------------------------------------------------

    def _recent(self, tenant: str) -> None:
        seen = self.app.hub.recent(tenant) if self.app.hub is not None else []
        self._json({"conversations": [{"conversation": c, "last_event_ms": at} for c, at in seen]})

    def _timeline(self, tenant: str, conversation_id: str) -> None:
        try:
            rows = self.app.store.conversation(tenant, conversation_id)
        except Exception:
            log.exception("reading a conversation for the web page")
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, "the result store is unavailable; retry later", {"Retry-After": "5"})
        if not rows:  # the same answer whether it is another tenant's or nobody's
            return self._error(HTTPStatus.NOT_FOUND, f"no conversation {conversation_id!r}")
        self._json(timeline.timeline_json(conversation_id, [to_event(r) for r in rows]))

    def _events(self, tenant: str, conversation_id: str) -> None:
        app = self.app
        if app.hub is None:
            return self._error(HTTPStatus.NOT_IMPLEMENTED, "this gateway has no event stream configured")
        if not app.streams.acquire(blocking=False):
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, "too many open event streams on this gateway; retry later", {"Retry-After": "10"})
        events: queue.Queue = queue.Queue()
        key = (tenant, conversation_id)
        app.hub.watch(key, events)  # before the headers go out: no event slips between
        try:
            self.send_response(HTTPStatus.OK)
            self.send_header("Content-Type", "text/event-stream; charset=utf-8")
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Accel-Buffering", "no")  # proxies (nginx) must not buffer the stream
            self.send_header("Referrer-Policy", "no-referrer")
            self.end_headers()
            self._write("retry: 3000\n: connected\n\n")
            last_event = last_write = time.monotonic()
            while not app.stopping.is_set():
                try:
                    event = events.get(timeout=0.5)
                except queue.Empty:
                    now = time.monotonic()
                    if now - last_event >= app.idle_s:
                        self._write(f"event: idle\ndata: {json.dumps({'idle_s': app.idle_s})}\n\n")
                        return
                    if now - last_write >= app.keepalive_s:
                        self._write(": keepalive\n\n")
                        last_write = now
                    continue
                u = event.utterance
                self._write(f"id: {u.sequence}.{event.revision}\ndata: {json.dumps(timeline.event_json(event), separators=(',', ':'))}\n\n")
                last_event = last_write = time.monotonic()
        except (OSError, ValueError):  # the client went away (or its socket timed out)
            pass
        finally:
            app.hub.unwatch(key, events)
            app.streams.release()
            self.close_connection = True

    # ---- plumbing ----------------------------------------------------------------------------

    def _write(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()

    def _send(self, status: HTTPStatus, body: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, data, status: HTTPStatus = HTTPStatus.OK, headers: dict | None = None) -> None:
        self._send(status, json.dumps(data, separators=(",", ":")).encode(), "application/json", headers)

    def _error(self, status: HTTPStatus, message: str, headers: dict | None = None) -> None:
        self._json({"error": message}, status, headers)

    def log_request(self, code="-", size="-") -> None:
        # The path only: a query may carry an API key (?key=), and ids are the caller's business.
        log.debug("%s %s %s", self.command, urlsplit(self.path).path.split("/")[1:3], code)

    def log_message(self, format, *args) -> None:  # http.server's signature
        log.debug("http: " + format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # open event streams do not hold up shutdown
    block_on_close = False


class _Server6(_Server):
    address_family = socket.AF_INET6


class WebServer:
    """The HTTP server in a background thread."""

    def __init__(self, app: WebApp, port: int, host: str = "127.0.0.1") -> None:
        self.app = app
        handler = type("BoundHandler", (Handler,), {"app": app})
        self.httpd = (_Server6 if ":" in host else _Server)((host, port), handler)
        context = tls_context(app.settings)
        if context is not None:
            # The handshake happens on the handler's thread (first read), not in the accept loop.
            self.httpd.socket = context.wrap_socket(self.httpd.socket, server_side=True, do_handshake_on_connect=False)
        self.port = self.httpd.server_address[1]
        self.scheme = "https" if context is not None else "http"
        self._thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.5}, name="web", daemon=True)

    def start(self) -> WebServer:
        self._thread.start()
        log.info("web page on %s://%s:%d/", self.scheme, self.httpd.server_address[0], self.port)
        return self

    def stop(self) -> None:
        self.app.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def tls_context(settings) -> ssl.SSLContext | None:
    """The gRPC server's TLS settings (merc.runtime.security) for HTTPS; None: plain HTTP."""
    if not (settings.tls_cert_file or settings.tls_key_file):
        return None
    if not (settings.tls_cert_file and settings.tls_key_file):
        raise ValueError("TLS needs both MERC_TLS_CERT_FILE and MERC_TLS_KEY_FILE")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(settings.tls_cert_file, settings.tls_key_file)
    if settings.tls_client_ca_file:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(settings.tls_client_ca_file)
    return context


def serve(store: Store, hub: EventHub | None, settings) -> WebServer | None:
    """Start the page on settings.http_port (None when it is 0)."""
    if not settings.http_port:
        return None
    return WebServer(WebApp(store, hub, settings), settings.http_port, settings.bind_host).start()
