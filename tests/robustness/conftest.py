"""The robustness suite's pytest hooks: the ``soak`` marker, and soak tests skipped unless ATOMRELAY_SOAK=1."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``soak`` marker."""
    config.addinivalue_line("markers", "soak: long-running soak test, run only with ATOMRELAY_SOAK=1 (make soak)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip soak tests unless ATOMRELAY_SOAK=1."""
    if os.environ.get("ATOMRELAY_SOAK") == "1":
        return
    skip = pytest.mark.skip(reason="soak test: set ATOMRELAY_SOAK=1 (make soak) to run it")
    for item in items:
        if item.get_closest_marker("soak") is not None:
            item.add_marker(skip)
