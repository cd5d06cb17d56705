"""Tests that start processes of their own (a worker, `mailgate web`, Flower, Postfix, ...):
every test under this folder is an integration test, by where it lives."""

from __future__ import annotations

from pathlib import Path

import pytest

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # This hook sees the whole session's items, wherever its conftest lives.
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.integration)
