"""The PostgreSQL backend: the same queue on a server shared by many machines.

Needs the ``postgres`` extra (``pip install "prismq-queue[postgres]"``: psycopg 3 and
psycopg_pool). Select it with a ``postgresql://`` URL in
:class:`~prismq.queue.database.QueueDatabase`.
"""

from __future__ import annotations

from .backend import NOTIFY_CHANNEL, PostgresBackend
from .connection import SCHEMA_VERSION

__all__ = ["NOTIFY_CHANNEL", "SCHEMA_VERSION", "PostgresBackend"]
