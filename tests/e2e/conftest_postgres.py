"""The ``postgres_db`` fixture: one seeded test-bed PostgreSQL per test session.

Used by ``tests/e2e/test_postgres.py`` (and any e2e test that needs the ``shop``
database). The fixture starts ``testbed.postgres`` in a session temp dir and always
stops it, also when a test or the start itself fails; its value is the component's
state (``env["POSTGRES_DSN"]`` is the read-only role, ``env["POSTGRES_ADMIN_DSN"]``
the superuser).

Not a ``conftest.py`` of its own: a module that uses the fixture imports it, or
``tests/conftest.py`` lists this module in ``pytest_plugins``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from testbed import postgres

__all__ = ["postgres_db"]


@pytest.fixture(scope="session")
def postgres_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    if not (postgres.BIN_DIR / "postgres").exists():
        pytest.skip(f"no PostgreSQL server binaries in {postgres.BIN_DIR}")
    state = postgres.start(tmp_path_factory.mktemp("postgres"))
    try:
        yield state
    finally:
        postgres.stop(state)
