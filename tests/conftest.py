"""Shared fixtures: the test bed's components (session-scoped, always stopped) and
the e2e marker for everything under tests/e2e."""

from __future__ import annotations

import pathlib

import pytest

pytest_plugins = [
    "tests.e2e.conftest_kube",
    "tests.e2e.conftest_observability",
    "tests.e2e.conftest_postgres",
    "tests.e2e.harness",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "e2e" in pathlib.Path(str(item.fspath)).parts:
            item.add_marker(pytest.mark.e2e)
