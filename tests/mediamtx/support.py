"""Shared fixtures for the mediamtx tests: configs, a Clock + StubTreq + fake mediamtx harness."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from treq.testing import StubTreq
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from atomrelay.config import Config, parse_config
from atomrelay.mediamtx.client import MediamtxClient
from atomrelay.mediamtx.reconciler import Reconciler
from atomrelay.sim.mediamtx import FakeMediamtx
from atomrelay.state import StateStore

CAMERAS = """
  - id: cam1
    host: 192.168.1.20
    rtsp_username: admin
    rtsp_password: "p@ss:w/rd%$X"
    streams:
      - {name: main, rtsp_path: video0_unicast}
      - {name: sub, rtsp_path: video1_unicast, codec: h265}
  - id: cam2
    host: 192.168.1.21
    streams:
      - {name: main, rtsp_path: video0_unicast, audio: none}
"""
ALL_PATHS = ["cam1/main", "cam1/sub", "cam2/main"]


def make_config(state_dir: Path, cameras: str = CAMERAS, mediamtx: str = "", poll_interval: str = "2s") -> Config:
    """A validated Config with the given cameras YAML, extra mediamtx keys and poll interval."""
    text = (
        f"state_dir: {state_dir}\n"
        "onvif:\n  users: [{username: admin, password: secret, role: Administrator}]\n"
        f"mediamtx:\n  poll_interval: {poll_interval}\n  wait_timeout: 30s\n{mediamtx}"
        f"cameras:{cameras}"
    )
    return parse_config(text)


class Events(list[dict[str, Any]]):
    """Captured log events with helpers for assertions."""

    def texts(self, level: LogLevel | None = None) -> list[str]:
        """The formatted messages, optionally only those at ``level``."""
        return [formatEvent(e) for e in self if level is None or e["log_level"] == level]

    def count(self, fragment: str) -> int:  # type: ignore[override]
        """How many messages contain ``fragment``."""
        return sum(fragment in text for text in self.texts())


def capture(obj: Any) -> Events:
    """Replace ``obj.log`` with a Logger that records events; return the record."""
    events = Events()
    obj.log = Logger(namespace=type(obj).__name__, observer=events.append)
    return events


class Harness:
    """A Reconciler wired to a FakeMediamtx through StubTreq, on a Clock."""

    def __init__(
        self, state_dir: Path, config: Config | None = None, start: bool = True, **fake_options: Any
    ) -> None:
        self.clock = Clock()
        self.clock.advance(1000)
        self.fake = FakeMediamtx(self.clock, **fake_options)
        self.stub = StubTreq(self.fake)
        self.config = config if config is not None else make_config(state_dir)
        self.store = StateStore(state_dir)
        self.client = MediamtxClient(self.stub, self.config.mediamtx, clock=self.clock)
        self.reconciler = Reconciler(self.clock, self.client, self.config, self.store)
        self.events = capture(self.reconciler)
        if start:
            self.reconciler.startService()

    def reload(self, config: Config) -> None:
        """What a config reload does: the running reconciler stops, one for ``config`` (same store) starts."""
        result_of(self.reconciler.stopService())
        self.config = config
        self.client = MediamtxClient(self.stub, config.mediamtx, clock=self.clock)
        self.reconciler = Reconciler(self.clock, self.client, config, self.store)
        self.events = capture(self.reconciler)
        self.reconciler.startService()
        self.stub.flush()

    def advance(self, seconds: float, step: float = 0.25) -> None:
        """Advance the clock in small steps, flushing the in-memory HTTP traffic after each."""
        remaining = seconds
        while remaining > 1e-9:
            delta = min(step, remaining)
            self.clock.advance(delta)
            self.stub.flush()
            remaining -= delta

    def writes(self) -> list[tuple[str, str]]:
        """(method, path) of every write the fake received."""
        return [(w.method, w.path) for w in self.fake.writes]


def result_of(deferred: Deferred[Any]) -> Any:
    """The result of an already-fired Deferred (raising its failure)."""
    results: list[Any] = []
    deferred.addBoth(results.append)
    assert results, "the Deferred has not fired"
    if hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]
