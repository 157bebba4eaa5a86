"""Packaging tests report what they measured (bundle size, start time) in pytest's summary."""

from __future__ import annotations

from typing import Any

import pytest

METRICS = pytest.StashKey[list[str]]()


@pytest.fixture
def report_metric(request: pytest.FixtureRequest) -> Any:
    """A function that adds one line to the 'packaging metrics' summary section."""
    lines = request.config.stash.setdefault(METRICS, [])
    return lines.append


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the collected metrics after the test results."""
    lines = config.stash.get(METRICS, [])
    if lines:
        terminalreporter.section("packaging metrics")
        for line in lines:
            terminalreporter.write_line(line)
