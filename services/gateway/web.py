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

Each connection holds one thread, from at most MERC_HTTP_MAX_CONNECTIONS: one more is answered 503
and closed. Event streams are capped like the gRPC API's (merc.gateway.limits): MERC_MAX_STREAMS,
MERC_MAX_STREAMS_PER_TENANT (more get 503); each sends a keep-alive comment every ``keepalive_s``,
ends after ``idle_s`` without an event (the page then offers to resume), and ends at once if its
client stops reading (its bounded inbox overflows). Nothing it logs carries a key, whatever the
request looks like (``scrub``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import queue
import re
import socket
import ssl
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

from merc.analyze import timeline
from merc.gateway.hub import EventHub, Inbox
from merc.gateway.limits import StreamSlots, streams_per_tenant
from merc.pipeline.events import to_event
from merc.pipeline.labels import LABELS
from merc.runtime import security
from merc.store import Store

log = logging.getLogger(__name__)


class WebApp:
    """What the handlers need: the store, the hub, the keys; and the page, rendered once."""

    def __init__(self, store: Store, hub: EventHub | None, settings, keepalive_s: float = 15.0, idle_s: float = 600.0,
                 max_streams: int | None = None, max_streams_per_tenant: int | None = None) -> None:
        self.store = store
        self.hub = hub
        self.settings = settings
        self.keys = security.ApiKeys.from_settings(settings)
        self.keepalive_s = keepalive_s
        self.idle_s = idle_s
        self.streams = StreamSlots(max_streams or settings.max_streams, max_streams_per_tenant or streams_per_tenant(settings))
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
    # A request line that does not parse is answered with a status line and headers (400), not as
    # HTTP/0.9's bare body, which no client reads as an error.
    default_request_version = "HTTP/1.0"
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
        refused = app.streams.acquire(tenant)
        if refused:
            return self._error(HTTPStatus.SERVICE_UNAVAILABLE, refused, {"Retry-After": "10"})
        events = Inbox()
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
            while not app.stopping.is_set() and not events.overflowed:  # overflowed: the client stopped reading
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
            app.streams.release(tenant)
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
        # The route only: a query may carry an API key (?key=), and ids are the caller's business. A
        # request whose line did not parse has no command or path: it is logged as "-".
        path = getattr(self, "path", "") if getattr(self, "command", None) else ""
        route = "/".join(urlsplit(path).path.split("/")[1:3]) if path else "-"
        log.debug("http: %s /%s %s", self.command or "-", scrub(route), code)

    def log_message(self, format, *args) -> None:  # http.server's signature; send_error's and log_error's too
        # http.server puts the raw request line into its errors ("Bad request version ('...')"): scrubbed
        # of keys, and never raising, whatever the line held.
        try:
            text = format % args if args else str(format)
        except Exception:
            text = str(format)
        log.debug("http: %s", scrub(text))


# Where a request may carry a key: ?key= (also URL-encoded), x-api-key:, Authorization: Bearer; all
# that follows one of these is dropped, to the end of the text (a key may hold anything). A bare key
# of the shape new_key() makes is dropped wherever it appears.
_SECRETS = re.compile(r"(?is)(key\s*(?:=|%3d|:)|authorization\s*:|bearer\b).*|merc_[A-Za-z0-9_\-]{16,}")


def scrub(text: str) -> str:
    """``text`` without API keys (``***`` instead), on one line of printable ASCII (escapes for the rest):
    a request cannot forge log lines either."""
    return _SECRETS.sub(lambda m: (m.group(1) or "") + "***", text).encode("unicode_escape").decode("ascii")


# What a connection beyond MERC_HTTP_MAX_CONNECTIONS is told before it is closed.
_BUSY_BODY = b'{"error":"too many connections to this server; retry later"}\n'
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
         b"Retry-After: 5\r\nConnection: close\r\n\r\n" % len(_BUSY_BODY)) + _BUSY_BODY


class _Server(ThreadingHTTPServer):
    """One thread per connection, at most ``max_connections`` of them: one more is refused at once."""

    daemon_threads = True  # open event streams do not hold up shutdown
    block_on_close = False

    def __init__(self, address, handler, max_connections: int) -> None:
        self.connections = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        if not self.connections.acquire(blocking=False):
            return self._refuse(request)
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except BaseException:
            self.connections.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connections.release()

    def _refuse(self, request) -> None:
        # On the accepting thread, so never blocking: one non-blocking send into an empty socket buffer.
        # Over TLS nothing can be said before a handshake, which could block: just closed.
        if not isinstance(request, ssl.SSLSocket):
            try:
                request.setblocking(False)
                request.send(_BUSY)
            except OSError:
                pass
        self.shutdown_request(request)

    def handle_error(self, request, client_address) -> None:
        # socketserver's own prints a traceback to stderr; its text could quote the request.
        log.debug("http: a request from %s failed: %s", client_address[0], scrub(repr(sys.exc_info()[1])))


class _Server6(_Server):
    address_family = socket.AF_INET6


class WebServer:
    """The HTTP server in a background thread."""

    def __init__(self, app: WebApp, port: int, host: str = "127.0.0.1") -> None:
        self.app = app
        handler = type("BoundHandler", (Handler,), {"app": app})
        self.httpd = (_Server6 if ":" in host else _Server)((host, port), handler, app.settings.http_max_connections)
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
