"""The store boundary: per-utterance results in PostgreSQL (deployments) or SQLite (embedded), via SQLAlchemy."""

from merc.store.repository import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
