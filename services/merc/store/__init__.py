"""The store boundary: per-utterance results in PostgreSQL (deployments) or SQLite (embedded), via SQLAlchemy."""

from merc.store.repository import Store, UtteranceResult

__all__ = ["Store", "UtteranceResult"]
