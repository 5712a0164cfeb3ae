"""The SQLite backend: one database file shared by many worker processes."""

from __future__ import annotations

from .backend import SQLiteBackend
from .connection import DEFAULT_PRAGMAS, SCHEMA_VERSION

__all__ = ["DEFAULT_PRAGMAS", "SCHEMA_VERSION", "SQLiteBackend"]
