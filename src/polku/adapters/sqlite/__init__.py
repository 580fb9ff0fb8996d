"""The embedded default: one SQLite database file in WAL mode."""

from polku.adapters.sqlite.catalog import SqliteCatalog
from polku.adapters.sqlite.event_log import SqliteEventLog

__all__ = ["SqliteCatalog", "SqliteEventLog"]
