"""The relay's metrics: counters, gauges and summaries with labels, written as Prometheus text.

One ``Registry`` lives as long as the process (counters survive config reloads); the
parts that count get it from the wiring. Label values must come from bounded sets the
relay knows (camera ids from the config, operation names of served routes, fault
subcodes the relay raises), never from what a client sent. As a second guard each metric
keeps at most ``MAX_SERIES`` label combinations; further ones are dropped, logged once.

The output is the text exposition format 0.0.4
(https://prometheus.io/docs/instrumenting/exposition_formats/): ``# HELP`` and
``# TYPE`` lines, then one ``name{label="value"} number`` line per series. This module
imports nothing else of the package, so every part may use it.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

from twisted.logger import Logger

MAX_SERIES = 1000
"""Label combinations one metric keeps."""
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"
"""The Content-Type of the text exposition format."""


def _escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class _Metric:
    """A named family of series, one per combination of label values."""

    log = Logger()
    kind = "untyped"

    def __init__(self, name: str, help_text: str, labels: Sequence[str]) -> None:
        self.name = name
        self.help = help_text
        self.labels = tuple(labels)
        self._values: dict[tuple[str, ...], list[float]] = {}
        self._full_logged = False

    def _series(self, values: tuple[str, ...]) -> list[float] | None:
        """The cells of one series, created on first use; None when the metric is full."""
        if len(values) != len(self.labels):
            raise ValueError(f"{self.name} takes labels {self.labels}, got {len(values)} values")
        cells = self._values.get(values)
        if cells is None:
            if len(self._values) >= MAX_SERIES:
                if not self._full_logged:
                    self._full_logged = True
                    self.log.warn("metric {name} has {count} series: new label values are not counted",
                                  name=self.name, count=MAX_SERIES)
                return None
            cells = self._values[values] = [0.0, 0.0]
        return cells

    def _label_text(self, values: tuple[str, ...], extra: str = "") -> str:
        pairs = [f'{name}="{_escape_label(value)}"' for name, value in zip(self.labels, values)]
        if extra:
            pairs.append(extra)
        return "{" + ",".join(pairs) + "}" if pairs else ""

    def lines(self) -> Iterator[str]:
        """The family's exposition lines."""
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        for values, cells in sorted(self._values.items()):
            yield f"{self.name}{self._label_text(values)} {_number(cells[0])}"


class Counter(_Metric):
    """A count that only goes up (``_total`` names)."""

    kind = "counter"

    def inc(self, *labels: str, amount: float = 1.0) -> None:
        """Add ``amount`` to the series with these label values."""
        cells = self._values.get(labels) or self._series(labels)
        if cells is not None:
            cells[0] += amount


class Gauge(_Metric):
    """A value that is set, e.g. at scrape time."""

    kind = "gauge"

    def set(self, value: float, *labels: str) -> None:
        """Set the series with these label values."""
        cells = self._series(labels)
        if cells is not None:
            cells[0] = value

    def clear(self) -> None:
        """Forget every series (before setting the ones that exist now)."""
        self._values.clear()


class Summary(_Metric):
    """Observed durations: their count and sum (no quantiles)."""

    kind = "summary"

    def observe(self, amount: float, *labels: str) -> None:
        """Count one observation of ``amount``."""
        cells = self._series(labels)
        if cells is not None:
            cells[0] += 1
            cells[1] += amount

    def lines(self) -> Iterator[str]:
        """``_count`` and ``_sum`` per series."""
        yield f"# HELP {self.name} {_escape_help(self.help)}"
        yield f"# TYPE {self.name} summary"
        for values, cells in sorted(self._values.items()):
            label_text = self._label_text(values)
            yield f"{self.name}_count{label_text} {_number(cells[0])}"
            yield f"{self.name}_sum{label_text} {_number(cells[1])}"


class Registry:
    """Every metric of the relay, by name."""

    def __init__(self) -> None:
        self._metrics: dict[str, _Metric] = {}

    def _get(self, cls: type[_Metric], name: str, help_text: str, labels: Sequence[str]) -> _Metric:
        metric = self._metrics.get(name)
        if metric is None:
            metric = self._metrics[name] = cls(name, help_text, labels)
        elif type(metric) is not cls or metric.labels != tuple(labels):
            raise ValueError(f"metric {name} is already registered with other labels or type")
        return metric

    def counter(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Counter:
        """The counter ``name`` (registered on first use)."""
        metric = self._get(Counter, name, help_text, labels)
        assert isinstance(metric, Counter)
        return metric

    def gauge(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Gauge:
        """The gauge ``name`` (registered on first use)."""
        metric = self._get(Gauge, name, help_text, labels)
        assert isinstance(metric, Gauge)
        return metric

    def summary(self, name: str, help_text: str, labels: Sequence[str] = ()) -> Summary:
        """The summary ``name`` (registered on first use)."""
        metric = self._get(Summary, name, help_text, labels)
        assert isinstance(metric, Summary)
        return metric

    def exposition(self) -> str:
        """Every metric in the text exposition format."""
        lines: list[str] = []
        for name in sorted(self._metrics):
            lines.extend(self._metrics[name].lines())
        return "\n".join(lines) + "\n"
