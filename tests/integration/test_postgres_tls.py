"""PostgreSQL TLS options travel in MERC_DATABASE_URL to libpq: demanding TLS from the local server,
which has none, must fail the connection (and work again without the demand)."""

import pytest
import sqlalchemy as sa

from merc.store import Store

pytestmark = pytest.mark.integration


def test_sslmode_in_the_url_is_honoured(postgres):
    url = postgres.database_url
    joiner = "&" if "?" in url else "?"
    store = Store(url + joiner + "sslmode=require")
    with pytest.raises(sa.exc.OperationalError, match="(?i)ssl"):
        store.conversation("t", "c")
    store.close()
    plain = Store(url + joiner + "sslmode=disable")
    assert plain.conversation("t", "never") == []
    plain.close()
