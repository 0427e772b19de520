"""The store against the real PostgreSQL: Alembic schema, idempotent upserts, causal windows."""

import uuid

import numpy as np
import pytest
from unit.test_store import result, speaker_queries

from merc.store import Store

pytestmark = pytest.mark.integration


def test_upsert_and_windows_on_postgres(postgres):
    store = Store(postgres.database_url)
    store.migrate()
    conv = uuid.uuid4().hex
    rows = []
    for i in range(5):
        r = result(i)
        r.conversation_id = conv
        rows.append(r)
    store.upsert(rows)
    store.upsert(rows)  # a replay writes the same rows again
    got = store.conversation("t", conv)
    assert [r.sequence for r in got] == list(range(5))
    assert [r.sequence for r in store.before("t", conv, 4, 2)] == [2, 3]
    np.testing.assert_array_equal(got[3].fused, rows[3].fused)
    assert got[0].speaker_moods == {} and got[0].probabilities == rows[0].probabilities


def test_speaker_queries_on_postgres(postgres):
    store = Store(postgres.database_url)
    store.migrate()
    store.erase("t", "c")  # the database outlives test runs
    speaker_queries(store)
