"""One consumer of merc.emotions per gateway, fanned out to the streams that watch a conversation."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict, defaultdict

from merc.bus import Bus, topics
from merc.bus.base import ConsumerSpec
from merc.v1 import events_pb2

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (tenant, conversation_id)
RECENT_PER_TENANT = 50  # conversations remembered per tenant for the web page's picker (merc.gateway.web)
# Events a watcher may leave unread (a client that stopped reading) before it is cut off: a few
# revisions each of a stream's most outstanding utterances (MERC_MAX_STREAM_PENDING).
INBOX_EVENTS = 1024


class Inbox(queue.Queue):
    """A watcher's bounded queue. The hub never blocks on it: an event that does not fit is dropped and
    the inbox marked ``overflowed``, and its owner ends the stream (the client reads the stored timeline
    or resumes), so a slow reader costs at most INBOX_EVENTS events and never stalls other streams."""

    def __init__(self, maxsize: int = INBOX_EVENTS) -> None:
        super().__init__(maxsize)
        self.overflowed = False

    def offer(self, item) -> bool:
        try:
            self.put_nowait(item)
            return True
        except queue.Full:
            self.overflowed = True
            return False


class EventHub:
    def __init__(self, bus: Bus, topic: str) -> None:
        self._bus = bus
        self._topic = topic
        self._watchers: dict[Key, set[Inbox]] = defaultdict(set)
        self._lock = threading.Lock()
        # tenant -> {conversation_id: last event time (ms)}, oldest first; ids and times only.
        self._recent: dict[str, OrderedDict[str, int]] = defaultdict(OrderedDict)
        self._stop = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="event-hub", daemon=True)

    def start(self, timeout_s: float = 30.0) -> None:
        self._thread.start()
        self._started.wait(timeout_s)

    def _run(self) -> None:
        # No consumer group: every gateway replica sees every event, from now on.
        consumer = self._bus.consumer(ConsumerSpec([self._topic], group_id=None, from_beginning=False))
        consumer.poll(timeout_ms=0)
        self._started.set()
        try:
            while not self._stop.is_set():
                for m in consumer.poll(timeout_ms=200):
                    if m.value is None:  # an erasure tombstone (merc.runtime.privacy): no event to forward
                        erased = topics.parse_conversation_key(m.key)
                        if erased is not None:
                            self._forget(*erased)
                        continue
                    try:
                        event = events_pb2.EmotionEvent.FromString(m.value)
                    except Exception:  # a foreign record on the topic: not ours to crash on
                        log.warning("undecodable record on %s[%d]@%d", m.topic, m.partition, m.offset)
                        continue
                    key = (event.utterance.tenant, event.utterance.conversation_id)
                    with self._lock:
                        self._remember(key, event.emitted_at_ms or int(time.time() * 1000))
                        targets = list(self._watchers.get(key, ()))
                    for inbox in targets:
                        inbox.offer(event)
        finally:
            consumer.close()

    def _remember(self, key: Key, at_ms: int) -> None:
        seen = self._recent[key[0]]
        seen[key[1]] = at_ms
        seen.move_to_end(key[1])
        if len(seen) > RECENT_PER_TENANT:
            seen.popitem(last=False)

    def _forget(self, tenant: str, conversation_id: str) -> None:
        with self._lock:
            self._recent.get(tenant, {}).pop(conversation_id, None)

    def recent(self, tenant: str, limit: int = 20) -> list[tuple[str, int]]:
        """The tenant's conversations this hub saw events of since it started, newest first:
        (conversation_id, last event time in ms)."""
        with self._lock:
            seen = list(self._recent.get(tenant, {}).items())
        return seen[::-1][:limit]

    def watch(self, key: Key, q: Inbox) -> None:
        """Deliver the conversation's events into q (one inbox may watch many conversations)."""
        with self._lock:
            self._watchers[key].add(q)

    def unwatch(self, key: Key, q: Inbox) -> None:
        with self._lock:
            self._watchers[key].discard(q)
            if not self._watchers[key]:
                del self._watchers[key]

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
