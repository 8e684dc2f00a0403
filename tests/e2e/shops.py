"""Throwaway copies of the test bed's ``shop`` database, for tests that inject faults.

Used by ``tests/e2e/test_default_checks.py`` and ``tests/e2e/test_default_template.py``:
a fault injected into a copy (fewer conversions, extra rows, slow statements) never
reaches the session-wide ``shop`` that other tests read. The read-only role can read a
copy as it reads ``shop`` (``CREATE DATABASE ... TEMPLATE`` keeps table grants).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import conninfo, sql

__all__ = ["ShopCopy", "copy_of_shop"]


@dataclasses.dataclass(frozen=True)
class ShopCopy:
    name: str
    admin: str  # DSN of the superuser: for injecting faults
    read_only: str  # DSN of the read-only role: for the checks
    seeded_at: datetime.datetime  # the seeded data ends here


@contextlib.contextmanager
def copy_of_shop(postgres_db: dict[str, Any]) -> Iterator[ShopCopy]:
    """A fresh copy of ``shop``, dropped afterwards (also while a check is connected)."""
    admin = postgres_db["env"]["POSTGRES_ADMIN_DSN"]
    name = f"shop_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {} TEMPLATE shop").format(sql.Identifier(name)))
    try:
        yield ShopCopy(
            name=name,
            admin=conninfo.make_conninfo(admin, dbname=name),
            read_only=conninfo.make_conninfo(postgres_db["env"]["POSTGRES_DSN"], dbname=name),
            seeded_at=datetime.datetime.fromisoformat(postgres_db["seed"]["seeded_at"]),
        )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
