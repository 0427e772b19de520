"""Privacy invariant after a real three-modality run: the raw audio bytes, image bytes and utterance
text that were sent appear in no Kafka topic, no PostgreSQL table and no service log."""

import base64
import os
import time
import uuid

import pytest
import sqlalchemy as sa
from conftest import REPO
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from samples import face_png, voice_wav

from e2e.conftest import new_conversation
from e2e.test_multimodal_pipeline import request

pytestmark = pytest.mark.e2e


def needles(text: str, audio: bytes, image: bytes) -> dict[str, bytes]:
    """What must not be found: the text, and slices of the media from their middle (headers are generic)."""
    out = {"text": text.encode()}
    for name, blob in (("audio", audio), ("image", image)):
        middle = blob[len(blob) // 2 : len(blob) // 2 + 48]
        out[name] = middle
        out[f"{name} (base64)"] = base64.b64encode(middle)[:40]
        out[f"{name} (hex)"] = middle.hex().encode()
    return out


def kafka_records(bootstrap: str, prefix: str):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    topics = [t for t in admin.list_topics() if t.startswith(prefix + ".")]
    admin.close()
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, isolation_level="read_uncommitted", enable_auto_commit=False)
    parts = [TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()]
    consumer.assign(parts)
    consumer.seek_to_beginning(*parts)
    ends = consumer.end_offsets(parts)
    while any(consumer.position(p) < ends[p] for p in parts):
        for batch in consumer.poll(timeout_ms=1000).values():
            yield from batch
    consumer.close()


def test_no_raw_media_or_text_in_kafka_postgres_or_logs(running, gateway, reader):
    conv = new_conversation()
    text = f"my account number is {uuid.uuid4().hex[:10]} and I am upset"
    audio, image = voice_wav(seconds=1.2), face_png(seed=7)
    gateway.AnalyzeUtterance(request(conv, 0, text=text, audio=audio, faces=[image]), timeout=30)
    events = reader.collect(conv, 1)
    assert events, "the run must have produced its event before the scan means anything"
    time.sleep(1)
    find = needles(text, audio, image)

    scanned, hits = 0, []
    for record in kafka_records(running.kafka_bootstrap, running.topic_prefix):
        blobs = [record.key or b"", record.value or b""] + [v for _, v in record.headers or []]
        scanned += 1
        hits += [f"kafka {record.topic}: {name}" for name, n in find.items() for b in blobs if n in b]
    assert scanned > 0

    engine = sa.create_engine(running.database_url)
    rows = 0
    with engine.connect() as c:
        for table in sa.inspect(engine).get_table_names():
            for row in c.execute(sa.text(f'SELECT * FROM "{table}"')):
                rows += 1
                for value in row:
                    blob = value if isinstance(value, bytes | memoryview) else str(value).encode()
                    hits += [f"postgres {table}: {name}" for name, n in find.items() if n in bytes(blob)]
    engine.dispose()
    assert rows > 0

    logs = list((REPO / os.environ.get("MERC_RUN_DIR", ".run") / "logs").glob("*.log"))
    assert logs
    for log in logs:
        data = log.read_bytes()
        hits += [f"log {log.name}: {name}" for name, n in find.items() if n in data]

    assert not hits, hits
    print(f"privacy scan: {scanned} Kafka records, {rows} PostgreSQL rows, {len(logs)} service logs; "
          "none holds the text, audio or image that was sent")
