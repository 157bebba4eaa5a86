"""Reactor choice: the suite runs on Twisted's default reactor, as the product does; the tests that drive
an asyncio ONVIF client in the same process (marked ``aio``) need the asyncio reactor and run in a second
pass (``make test`` runs both)."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``aio`` tests on a reactor other than asyncio, and the others on the asyncio reactor."""
    on_asyncio = config.getoption("reactor") == "asyncio"
    for item in items:
        needs_asyncio = item.get_closest_marker("aio") is not None
        if needs_asyncio and not on_asyncio:
            item.add_marker(pytest.mark.skip(reason="drives an asyncio client: run with --reactor=asyncio"))
        elif on_asyncio and not needs_asyncio:
            item.add_marker(pytest.mark.skip(reason="runs on the default reactor, as the product does"))
