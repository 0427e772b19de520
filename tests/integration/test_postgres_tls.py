"""PostgreSQL TLS options travel in MERC_DATABASE_URL to libpq: demanding TLS from the local server,
which has none, must fail the connection (and work again without the demand)."""

import pytest
import sqlalchemy as sa

from merc.store import Store, StoreUnavailable

pytestmark = pytest.mark.integration


def test_sslmode_in_the_url_is_honoured(postgres):
    url = postgres.database_url
    joiner = "&" if "?" in url else "?"
    store = Store(url + joiner + "sslmode=require")
    # A refused connection is an outage to the callers (they retry); libpq's reason stays on the cause.
    with pytest.raises(StoreUnavailable) as refused:
        store.conversation("t", "c")
    assert isinstance(refused.value.__cause__, sa.exc.OperationalError)
    assert "ssl" in str(refused.value.__cause__).lower()
    store.close()
    plain = Store(url + joiner + "sslmode=disable")
    assert plain.conversation("t", "never") == []
    plain.close()
