"""The gateway's web page and its HTTP API (merc.gateway.web), in-process over SQLite and the memory
bus: the stored timeline, live events over server-sent events, tenant scoping, and the
self-contained report of `merc analyze --html`."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import re
import socket
import ssl
import time

import pytest
from conftest import REPO

from merc.analyze import timeline
from merc.bus.memory import MemoryBus
from merc.gateway.hub import EventHub
from merc.gateway.web import WebApp, WebServer, scrub
from merc.pipeline.events import to_event
from merc.pipeline.labels import LABELS
from merc.runtime import security
from merc.runtime.config import Settings
from merc.store import Store
from unit.test_store import result

KEY_A, KEY_B = security.new_key(), security.new_key()
KEYS = f"tenant-a:{security.hash_key(KEY_A)},tenant-b:{security.hash_key(KEY_B)}"
TOPIC = "merc.emotions"
GUARD_S = 60  # bounds a failure only: every wait here is on a condition, never a timing under test


def stored(tenant: str, conversation: str, seq: int, **kw):
    r = result(seq, **kw)
    r.tenant, r.conversation_id, r.start_ms, r.end_ms = tenant, conversation, 1000 * seq, 1000 * seq + 800
    r.probabilities = [0.1, 0.4, 0.1, 0.1, 0.1, 0.1, 0.1]
    r.speaker_moods = {r.speaker: {"probabilities": r.probabilities, "valence": 0.25, "arousal": 0.1, "emotion_shifts": 1, "utterances": seq + 1}}
    return r


@pytest.fixture
def web(tmp_path):
    """(start, bus): start(**settings) serves the page over a store with tenant-a's call-1 and tenant-b's call-9."""
    with serving(tmp_path) as served:
        yield served


@contextlib.contextmanager
def serving(tmp_path):
    """The ``web`` fixture's body (tests/unit/test_page_browser.py opens the same server in Chromium)."""
    store = Store(f"sqlite:///{tmp_path / 'merc.db'}")
    store.migrate()
    store.upsert([stored("tenant-a", "call-1", 0), stored("tenant-a", "call-1", 1, speaker="b")])
    store.upsert([stored("tenant-a", "call-1", 1, speaker="b", label="anger", revision=1)])
    store.upsert([stored("tenant-b", "call-9", 0)])
    bus = MemoryBus()
    hub = EventHub(bus, TOPIC)
    hub.start()
    servers = []

    def start(keepalive_s: float = 15.0, idle_s: float = 600.0, max_streams: int = 4, **settings) -> WebServer:
        cfg = Settings(inference="local", max_streams=max_streams, **settings)
        server = WebServer(WebApp(store, hub, cfg, keepalive_s=keepalive_s, idle_s=idle_s), 0).start()
        servers.append(server)
        return server

    try:
        yield start, bus
    finally:
        for s in servers:
            s.stop()
        hub.stop()
        store.close()


def get(server: WebServer, path: str, key: str | None = None, bearer: bool = False, context=None):
    conn = (http.client.HTTPSConnection("localhost", server.port, timeout=10, context=context) if context
            else http.client.HTTPConnection("127.0.0.1", server.port, timeout=10))
    headers = {}
    if key:
        headers["Authorization" if bearer else "x-api-key"] = f"Bearer {key}" if bearer else key
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    conn.close()
    return resp.status, resp.headers, body


def get_json(server, path, key=None, **kw):
    status, _, body = get(server, path, key, **kw)
    return status, json.loads(body)


def publish(bus: MemoryBus, tenant: str, conversation: str, seq: int, **kw) -> None:
    event = to_event(stored(tenant, conversation, seq, **kw))
    bus.producer().send(TOPIC, conversation.encode(), event.SerializeToString(), (("tenant", tenant.encode()),))


class Stream:
    """A server-sent-events client: the raw lines, and the JSON of each data line."""

    def __init__(self, server: WebServer, path: str) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
        self.conn.request("GET", path)
        self.resp = self.conn.getresponse()
        self.lines: list[str] = []

    def next_data(self, timeout_s: float = 10.0) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.resp.readline().decode()
            if not line:
                raise EOFError("the stream ended")
            self.lines.append(line.rstrip("\n"))
            if line.startswith("data: "):
                return json.loads(line[6:])
        raise TimeoutError("no event")

    def read_until(self, prefix: str) -> str:
        while True:
            line = self.resp.readline().decode()
            if not line:
                raise EOFError(f"the stream ended before a line starting with {prefix!r}")
            self.lines.append(line.rstrip("\n"))
            if line.startswith(prefix):
                return line

    def close(self) -> None:
        self.conn.close()


# ---- the stored timeline ------------------------------------------------------------------------


def test_the_timeline_is_the_latest_revision_of_each_utterance(web):
    start, _ = web
    server = start(tenant="tenant-a")
    status, body = get_json(server, "/api/conversations/call-1")
    assert status == 200
    assert body["conversation"] == "call-1" and body["labels"] == list(LABELS)
    first, second = body["utterances"]
    assert (first["utterance"], first["revision"]) == (0, 0)
    assert (second["utterance"], second["revision"], second["label"], second["speaker"]) == (1, 1, "anger", "b")
    assert list(first["probs"]) == list(LABELS) and first["probs"]["joy"] == pytest.approx(0.4)
    assert (first["start_ms"], first["end_ms"]) == (0, 800)
    assert first["weights"] == {"text": 1.0} and first["missing"] == [] and first["degraded"] is False
    assert first["mood"]["speaker"]["valence"] == pytest.approx(0.25)
    assert "tenant" not in first and "text" not in first


def test_event_json_uses_the_field_names_of_analyze_json():
    from merc.analyze.embedded import LineResult

    event = to_event(stored("t", "c", 2))
    mine, theirs = timeline.event_json(event), LineResult(None, event, line=3).to_json()
    shared = set(mine) & set(theirs)
    assert shared >= {"label", "probs", "confidence", "prediction_set", "sentiment", "modalities", "weights", "degraded",
                      "incongruence", "mood", "revision"}
    assert {k: mine[k] for k in shared} == {k: theirs[k] for k in shared}


def test_the_page_needs_no_key_and_carries_no_data(web):
    start, _ = web
    server = start(api_keys=KEYS)
    status, headers, body = get(server, "/")
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    page = body.decode()
    assert timeline.asset("timeline.js") in page and timeline.asset("timeline.css") in page
    assert "call-1" not in page
    csp = headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "'unsafe-inline'" not in csp and "connect-src 'self'" in csp
    assert get(server, "/nothing-here")[0] == 404


# ---- auth and tenant scoping --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/conversations", "/api/conversations/call-1", "/api/conversations/call-1/events"])
def test_with_keys_every_api_request_needs_a_known_key(web, path):
    start, _ = web
    server = start(api_keys=KEYS)
    status, headers, body = get(server, path)
    assert status == 401 and "API key" in json.loads(body)["error"] and headers["WWW-Authenticate"].startswith("Bearer")
    assert get(server, path, key="merc_not-a-key")[0] == 401
    assert get(server, path + "?key=merc_not-a-key")[0] == 401


def test_a_tenant_reads_its_own_conversation_and_never_another_tenants(web):
    start, _ = web
    server = start(api_keys=KEYS)
    assert get_json(server, "/api/conversations/call-1", KEY_A)[0] == 200
    assert get_json(server, "/api/conversations/call-1", KEY_A, bearer=True)[0] == 200
    assert get_json(server, f"/api/conversations/call-1?key={KEY_A}")[0] == 200
    # Tenant B: tenant A's conversation is "not found", exactly like one that does not exist.
    other = get_json(server, "/api/conversations/call-1", KEY_B)
    unknown = get_json(server, "/api/conversations/call-404", KEY_B)
    assert other[0] == unknown[0] == 404
    assert other[1]["error"].replace("call-1", "X") == unknown[1]["error"].replace("call-404", "X")
    assert get_json(server, "/api/conversations/call-9", KEY_B)[0] == 200
    assert get_json(server, "/api/conversations/call-9", KEY_A)[0] == 404


def test_without_keys_every_request_acts_for_the_default_tenant(web):
    start, _ = web
    server = start(tenant="tenant-b")
    assert get_json(server, "/api/conversations/call-9")[0] == 200
    assert get_json(server, "/api/conversations/call-1")[0] == 404


# ---- live events --------------------------------------------------------------------------------


def test_the_event_stream_delivers_the_callers_events_only(web):
    start, bus = web
    server = start(api_keys=KEYS, keepalive_s=0.2)
    stream = Stream(server, f"/api/conversations/call-7/events?key={KEY_A}")
    try:
        assert stream.resp.status == 200 and stream.resp.headers["Content-Type"].startswith("text/event-stream")
        stream.read_until(": keepalive")
        publish(bus, "tenant-b", "call-7", 0, label="fear")  # same id, another tenant: not ours
        publish(bus, "tenant-a", "call-7", 3, label="joy")
        publish(bus, "tenant-a", "call-7", 3, label="anger", revision=1)
        first, revised = stream.next_data(), stream.next_data()
        assert (first["conversation"], first["utterance"], first["revision"], first["label"]) == ("call-7", 3, 0, "joy")
        assert (revised["utterance"], revised["revision"], revised["label"]) == (3, 1, "anger")
        assert "id: 3.1" in stream.lines
    finally:
        stream.close()
    # The hub remembers it for tenant A's picker, and tenant B sees its own only.
    assert [c["conversation"] for c in get_json(server, "/api/conversations", KEY_A)[1]["conversations"]] == ["call-7"]
    assert [c["conversation"] for c in get_json(server, "/api/conversations", KEY_B)[1]["conversations"]] == ["call-7"]
    bus.producer().send(TOPIC, b"tenant-a\x00call-7", None, (("tenant", b"tenant-a"), ("erased", b"1")))  # erasure
    deadline = time.monotonic() + GUARD_S
    while get_json(server, "/api/conversations", KEY_A)[1]["conversations"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert get_json(server, "/api/conversations", KEY_A)[1]["conversations"] == []


def test_an_idle_stream_ends_and_streams_are_capped(web):
    start, _ = web
    server = start(tenant="tenant-a", idle_s=0.5, max_streams=1)
    stream = Stream(server, "/api/conversations/call-1/events")
    try:
        assert get(server, "/api/conversations/call-1/events")[0] == 503  # the one slot is taken
        assert stream.read_until("event: idle")  # ended by the server: the client holds it open
        assert stream.resp.readline().startswith(b"data:")
    finally:
        stream.close()
    deadline = time.monotonic() + GUARD_S
    while time.monotonic() < deadline:  # the slot is free again
        s = Stream(server, "/api/conversations/call-1/events")
        status = s.resp.status
        s.close()
        if status == 200:
            break
        time.sleep(0.1)
    assert status == 200


def test_one_tenant_cannot_take_every_event_stream(web):
    start, _ = web
    server = start(api_keys=KEYS, max_streams=4)  # a quarter each by default with keys: one
    held = Stream(server, f"/api/conversations/call-1/events?key={KEY_A}")
    try:
        assert held.resp.status == 200
        status, headers, body = get(server, f"/api/conversations/call-2/events?key={KEY_A}")
        assert status == 503 and "tenant" in json.loads(body)["error"] and headers["Retry-After"]
        other = Stream(server, f"/api/conversations/call-9/events?key={KEY_B}")  # B still gets one
        try:
            assert other.resp.status == 200
        finally:
            other.close()
    finally:
        held.close()


# ---- connections, malformed requests, logs ------------------------------------------------------


def raw(server: WebServer, payload: bytes | None) -> bytes:
    """Send ``payload`` on a fresh connection (None: send nothing) and read until the server closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=GUARD_S) as s:
        if payload is not None:
            s.sendall(payload)
            s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_connections_beyond_the_cap_are_refused_at_once_and_served_again_once_one_closes(web):
    start, _ = web
    server = start(tenant="tenant-a", http_max_connections=2)
    held = [socket.create_connection(("127.0.0.1", server.port), timeout=GUARD_S) for _ in range(2)]
    try:
        # Accepted in order: the two idle connections hold both threads, the third is told and closed.
        busy = raw(server, None)
        assert busy.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 5" in busy and b"too many connections" in busy
    finally:
        for s in held:
            s.close()
    deadline = time.monotonic() + GUARD_S
    while True:  # each closed connection frees its thread once the server has read the end of it
        try:
            if get(server, "/healthz")[0] == 200:
                break
        except (OSError, http.client.HTTPException):  # refused while the threads are finishing
            pass
        assert time.monotonic() < deadline, "the server never took connections again"
        time.sleep(0.05)


SECRET = "s3cr3t-K3Y-" + "z" * 8
MALFORMED = [
    b"GET /api/conversations/x/events?key=" + SECRET.encode() + b" HTTP/1.1 junk\r\n\r\n",  # four words
    b"GET /?key=" + SECRET.encode() + b" HTTP/1.x\r\n\r\n",  # bad version
    b"GET /?key=" + SECRET.encode() + b" HTTP/9.9\r\n\r\n",  # unsupported version
    b"BREW /?key=" + SECRET.encode() + b" HTTP/1.1\r\n\r\n",  # unknown method
    b"\xff\xfe /?key=" + SECRET.encode() + b"\xff HTTP/1.1\r\n\r\n",  # not UTF-8
    b"GET /?key=" + SECRET.encode() + b"%0A%ff HTTP/1.1 \x1b[2J\r\n\r\n",  # escapes, encoded line break
    b"GET\r\n\r\n",  # no path, no version
    b"GET /api/conversations/x HTTP/1.1\r\nx-api-key: " + SECRET.encode() + b"\r\nX-Big: " + b"a" * 70_000 + b"\r\n\r\n",  # huge header
    b"GET /api/conversations HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(120)) + b"\r\n",  # too many headers
    b"GET /api/conversations/x HTTP/1.1\r\nAuthorization: Bearer " + SECRET.encode() + b"\r\nbroken header line\r\n\r\n",
    b"GET /api/conversations/x/events?key=" + SECRET.encode() + b"&key=" + SECRET.encode() + b" HTTP/1.1\r\nHost: \xff\r\n\r\n",
]


@pytest.mark.parametrize("payload", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_requests_are_answered_and_no_log_line_carries_a_key(web, caplog, payload):
    start, _ = web
    server = start(api_keys=KEYS)
    caplog.set_level(logging.DEBUG)
    answer = raw(server, payload)
    status = answer.split(b"\r\n", 1)[0]
    assert re.match(rb"HTTP/1\.[01] (4\d\d|50[15]) ", status), answer[:200]
    assert get(server, "/healthz")[0] == 200  # and the server carries on
    assert caplog.records, "nothing was logged: the test would prove nothing"
    assert SECRET not in caplog.text and SECRET[:8] not in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info or "failed" in r.getMessage()]
    assert all("\n" not in r.getMessage() and "\x1b" not in r.getMessage() for r in caplog.records)


def test_a_valid_request_with_a_key_in_its_query_logs_the_route_only(web, caplog):
    start, _ = web
    server = start(api_keys=KEYS)
    caplog.set_level(logging.DEBUG)
    assert get(server, f"/api/conversations/call-1?key={KEY_A}")[0] == 200
    assert get(server, "/api/conversations/call-1?key=" + SECRET)[0] == 401
    assert caplog.records and KEY_A not in caplog.text and SECRET not in caplog.text and "call-1" not in caplog.text


def test_scrub_drops_keys_wherever_they_stand():
    for text in (f"GET /x?key={SECRET} HTTP/1.1", f"x-api-key: {SECRET}", f"Authorization: Bearer {SECRET}",
                 f"bearer {SECRET}", f"/x?KEY%3D{SECRET}", f"'GET /?a=1&key={SECRET}&b=2'", f"line\nkey = {SECRET}",
                 f"a bare key {KEY_A} here"):
        out = scrub(text)
        assert SECRET not in out and KEY_A not in out and "***" in out and "\n" not in out, (text, out)
    assert scrub("Bad request version ('HTTP/1.x')") == "Bad request version ('HTTP/1.x')"


def test_https_with_the_grpc_servers_certificate(web, pki):
    start, _ = web
    server = start(tenant="tenant-a", tls_cert_file=str(pki / "server.pem"), tls_key_file=str(pki / "server.key"))
    context = ssl.create_default_context(cafile=str(pki / "ca.pem"))
    assert get_json(server, "/api/conversations/call-1", context=context)[0] == 200
    with pytest.raises((ssl.SSLError, ConnectionError, http.client.HTTPException)):
        get(server, "/api/conversations/call-1")  # plain HTTP to an HTTPS port


# ---- merc analyze --html ------------------------------------------------------------------------


def embedded_data(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="merc-data">(.*?)</script>', page, re.S)
    assert m, "no embedded data"
    return json.loads(m.group(1))


def test_analyze_html_writes_one_self_contained_page(tmp_path):
    from merc.cli import main

    out, rows = tmp_path / "report.html", tmp_path / "events.jsonl"
    code = main(["analyze", str(REPO / "examples/conversation.jsonl"), "--html", str(out), "--out", str(rows), "--threads", "1"])
    assert code == 0
    page = out.read_text()
    events = [json.loads(x) for x in rows.read_text().splitlines()]
    data = embedded_data(page)
    assert data["mode"] == "static"
    (conversation,) = data["timelines"]
    assert [(u["utterance"], u["label"], u["confidence"]) for u in conversation["utterances"]] == \
        [(e["utterance"], e["label"], e["confidence"]) for e in events]
    # The same JS and CSS as the served page, inlined; nothing fetched from anywhere.
    assert timeline.asset("timeline.js") in page and timeline.asset("timeline.css") in page
    urls = set(re.findall(r"[a-z][a-z0-9+.-]*://[^\s\"'<>)]*", page, re.I))
    assert urls <= {"http://www.w3.org/2000/svg"}, urls  # the SVG namespace name is an identifier, never fetched
    assert not re.search(r"<(script|img|link|iframe)[^>]*\s(src|href)=", page, re.I)
    assert "@import" not in page and "url(" not in page
    # What was said, from the user's own manifest: the report shows it (the live page never does).
    said = {(m["conversation"], m["utterance"]): m["text"] for m in map(json.loads, (REPO / "examples/conversation.jsonl").read_text().splitlines())}
    assert {(conversation["conversation"], u["utterance"]): u["text"] for u in conversation["utterances"]} == said


def test_html_needs_the_embedded_mode(tmp_path, capsys):
    from merc.cli import EXIT_USAGE, main

    code = main(["analyze", str(REPO / "examples/conversation.jsonl"), "--html", str(tmp_path / "r.html"), "--remote", "127.0.0.1:1"])
    assert code == EXIT_USAGE and "--html" in capsys.readouterr().err


# ---- what was said: the report only -------------------------------------------------------------


def test_the_live_page_and_its_api_carry_no_text(web):
    """Only timeline.report takes texts: the gateway's page, stored timeline and event stream have none."""
    import inspect

    start, bus = web
    server = start(tenant="tenant-a", keepalive_s=0.2)
    page = get(server, "/")[2].decode()
    assert embedded_data(page) == {"mode": "live", "auth": False, "labels": list(LABELS)}  # no utterance, no text
    status, body = get_json(server, "/api/conversations/call-1")
    assert status == 200 and body["utterances"] and all("text" not in u for u in body["utterances"])
    stream = Stream(server, "/api/conversations/call-5/events")
    try:
        stream.read_until(": keepalive")
        publish(bus, "tenant-a", "call-5", 0)
        assert "text" not in stream.next_data()
    finally:
        stream.close()
    assert "texts" not in inspect.signature(timeline.timeline_json).parameters
    assert "texts" not in inspect.signature(timeline.event_json).parameters
    assert "texts" in inspect.signature(timeline.report).parameters


INJECTION = "</script><script>alert(1)</script><!-- & </SCRIPT > ]]> \u2028 end"


def test_report_text_is_escaped_inside_its_script():
    events = [to_event(stored("t", "c", 0)), to_event(stored("t", "c", 1))]
    page = timeline.report(events, texts={("c", 0): INJECTION, ("c", 1): "plain words", ("other", 0): "not in the report"})
    # Only the page's own two scripts end: the data's and the code's.
    assert page.lower().count("</script") == 2 and "alert(1)</script>" not in page and "<!--" not in page
    (t,) = embedded_data(page)["timelines"]
    assert [u.get("text") for u in t["utterances"]] == [INJECTION, "plain words"]
    assert "not in the report" not in page
    # Without texts, no utterance has one.
    assert all("text" not in u for u in embedded_data(timeline.report(events))["timelines"][0]["utterances"])


# ---- contrast (WCAG 2.1): the numbers timeline.css states ---------------------------------------


def _luminance(color: str) -> float:
    c = color.lstrip("#")
    if len(c) == 3:
        c = "".join(ch * 2 for ch in c)
    rgb = [int(c[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    lin = [x / 12.92 if x <= 0.03928 else ((x + 0.055) / 1.055) ** 2.4 for x in rgb]
    return 0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2]


def contrast(a: str, b: str) -> float:
    hi, lo = sorted((_luminance(a), _luminance(b)), reverse=True)
    return (hi + 0.05) / (lo + 0.05)


TEXT_VARS, BACKGROUND_VARS = ("--fg", "--muted", "--accent", "--alert", "--warn"), ("--bg", "--card", "--lane")


def test_every_text_colour_has_aa_contrast_and_markers_stand_out_on_every_emotion_colour():
    css = timeline.asset("timeline.css")
    js = timeline.asset("timeline.js")
    root = dict(re.findall(r"(--[a-z]+):\s*(#[0-9a-fA-F]{3,6})", css.split("}", 1)[0]))
    for fg in TEXT_VARS:
        for bg in BACKGROUND_VARS:
            assert contrast(root[fg], root[bg]) >= 4.5, (fg, bg, contrast(root[fg], root[bg]))
    assert contrast("#ffffff", root["--accent"]) >= 4.5 and contrast("#ffffff", root["--warn"]) >= 4.5  # buttons, the ! mark
    # Text is only ever drawn in those colours: every color: in the CSS, and the fill of every SVG text class.
    colours = set(re.findall(r"(?<![-\w])color:\s*([^;}]+)", css))
    assert colours <= {f"var({v})" for v in TEXT_VARS} | {"#fff"}, colours
    for cls in ("label-text", "conf-text", "tick-label", "revision-mark"):
        (fill,) = re.findall(r"svg \." + cls + r" \{[^}]*fill:\s*([^;}]+)", css)
        assert fill.strip() in {f"var({v})" for v in TEXT_VARS}, (cls, fill)
    assert not re.search(r'el\("text", \{[^}]*fill', js), "an SVG text with its own fill (emotion colours are fills only)"
    # Markers on a bar are a white stroke under a --fg one: one of the two is >= 3:1 on every emotion colour (1.4.11).
    emotions = json.loads(re.search(r"var COLORS = (\{[^}]*\})", js).group(1).replace(" ", "").replace("{", '{"').replace(":", '":')
                          .replace(",", ',"'))
    assert set(emotions) == set(LABELS)
    for label, fill in emotions.items():
        assert max(contrast(fill, "#ffffff"), contrast(fill, root["--fg"])) >= 3, (label, fill)
