"""sd_notify: datagrams on a real AF_UNIX socket, driven by a Clock; and the real relay process."""

from __future__ import annotations

import os
import signal
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

from atomrelay.systemd import (
    NotifyError,
    NotifySocket,
    SystemdNotifier,
    observed,
    socket_address,
    watchdog_interval,
)

from .support import NotifyListener


@pytest.fixture
def path_listener() -> Iterator[NotifyListener]:
    """A notification socket at a filesystem path (short enough for sun_path)."""
    directory = tempfile.mkdtemp(prefix="ar-", dir="/tmp")
    listener = NotifyListener(os.path.join(directory, "notify"))
    yield listener
    listener.close()
    os.unlink(listener.address)
    os.rmdir(directory)


@pytest.fixture
def abstract_listener() -> Iterator[NotifyListener]:
    """A notification socket in the abstract namespace (``@name``)."""
    listener = NotifyListener("\0atomrelay-test-" + uuid.uuid4().hex)
    yield listener
    listener.close()


def notifier(listener: NotifyListener, clock: Clock, ready: list[Deferred[Any]], status: list[str],
             **environ: str) -> SystemdNotifier:
    """A SystemdNotifier on ``clock`` talking to ``listener``; ``status[0]`` is the status line."""
    env = {"NOTIFY_SOCKET": listener.env_value, **environ}
    return SystemdNotifier(clock, ready=lambda: ready, status=lambda: status[0], environ=env, pid=100, parent_pid=1,
                           frozen=False)


def test_socket_address_forms() -> None:
    """A path is used as is, ``@name`` becomes an abstract address, anything else is refused."""
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@sd-notify") == "\0sd-notify"
    for bad in ("relative/path", "@", "vsock:2:1234", ""):
        with pytest.raises(NotifyError):
            socket_address(bad)


def test_watchdog_interval_is_half_and_respects_watchdog_pid() -> None:
    """WATCHDOG_USEC=30 s gives 15 s pings, only for the PID systemd named (or a frozen child's parent)."""
    env = {"WATCHDOG_USEC": "30000000"}
    assert watchdog_interval(env, pid=10, parent_pid=1) == 15.0
    assert watchdog_interval({**env, "WATCHDOG_PID": "10"}, pid=10, parent_pid=1) == 15.0
    assert watchdog_interval({**env, "WATCHDOG_PID": "11"}, pid=10, parent_pid=1) is None
    assert watchdog_interval({**env, "WATCHDOG_PID": "9"}, pid=10, parent_pid=9) is None
    assert watchdog_interval({**env, "WATCHDOG_PID": "9"}, pid=10, parent_pid=9, frozen=True) == 15.0
    assert watchdog_interval({}, pid=10, parent_pid=1) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}, pid=10, parent_pid=1) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}, pid=10, parent_pid=1) is None


def test_ready_waits_for_every_condition_then_carries_status(path_listener: NotifyListener) -> None:
    """READY=1 is sent only after all readiness Deferreds fired, with the STATUS line."""
    clock = Clock()
    listening: Deferred[Any] = Deferred()
    paths: Deferred[None] = Deferred()
    service = notifier(path_listener, clock, [listening, paths], ["2 cameras, 4 streams"])
    service.startService()
    assert not path_listener.seen("READY")
    listening.callback(None)
    assert not path_listener.seen("READY")
    paths.callback(None)
    ready = [m for m in path_listener.drain() if "READY" in m]
    assert ready == [{"READY": "1", "STATUS": "2 cameras, 4 streams"}]
    assert service.is_ready
    service.stopService()


def test_conditions_keep_their_own_results(path_listener: NotifyListener) -> None:
    """Waiting on an ``observed`` copy of a service's Deferred does not change what its other users receive."""
    clock = Clock()
    shared: Deferred[str] = Deferred()
    service = notifier(path_listener, clock, [observed(shared)], ["ok"])
    service.startService()
    shared.callback("port")
    results: list[str] = []
    shared.addCallback(results.append)
    assert results == ["port"]
    service.stopService()


def test_watchdog_pings_at_half_the_interval_from_the_clock(abstract_listener: NotifyListener) -> None:
    """With WATCHDOG_USEC=4 s a WATCHDOG=1 datagram goes out at start and every 2 s of the clock, to an abstract socket."""
    clock = Clock()
    service = notifier(abstract_listener, clock, [], ["fine"], WATCHDOG_USEC="4000000")
    assert service.watchdog == 2.0
    service.startService()

    def pings() -> int:
        return sum(1 for m in abstract_listener.drain() if m.get("WATCHDOG") == "1")

    assert pings() == 1
    clock.advance(1.9)
    assert pings() == 1
    clock.advance(0.1)
    assert pings() == 2
    clock.advance(2.0)
    clock.advance(2.0)
    assert pings() == 4
    service.stopService()
    clock.advance(10.0)
    assert pings() == 4


def test_status_changes_ride_on_the_next_tick(path_listener: NotifyListener) -> None:
    """A changed status line is sent with the next watchdog ping, an unchanged one is not repeated."""
    clock = Clock()
    status = ["1 camera online"]
    service = notifier(path_listener, clock, [], status, WATCHDOG_USEC="2000000")
    service.startService()
    clock.advance(1.0)
    status[0] = "0 cameras online"
    clock.advance(1.0)
    clock.advance(1.0)
    statuses = [m["STATUS"] for m in path_listener.drain() if "STATUS" in m]
    assert statuses == ["1 camera online", "0 cameras online"]
    service.stopService()


def test_stopping_is_sent_on_stop(path_listener: NotifyListener) -> None:
    """stopService sends STOPPING=1."""
    service = notifier(path_listener, Clock(), [], ["x"])
    service.startService()
    service.stopService()
    assert path_listener.drain()[-1]["STOPPING"] == "1"


def test_reload_sends_reloading_with_monotonic_time_then_ready(path_listener: NotifyListener) -> None:
    """reloading() sends RELOADING=1 with MONOTONIC_USEC, reloaded() sends READY=1 again."""
    service = notifier(path_listener, Clock(), [], ["3 cameras"])
    service.startService()
    path_listener.drain().clear()
    service.reloading()
    service.reloaded()
    reloading, ready = path_listener.drain()
    assert reloading["RELOADING"] == "1"
    assert abs(int(reloading["MONOTONIC_USEC"]) - time.monotonic_ns() // 1000) < 10_000_000
    assert ready == {"READY": "1", "STATUS": "3 cameras"}
    service.stopService()


def test_without_notify_socket_nothing_happens() -> None:
    """No $NOTIFY_SOCKET: disabled, no loop is scheduled on the clock."""
    clock = Clock()
    service = SystemdNotifier(clock, ready=lambda: [], status=lambda: "x", environ={})
    service.startService()
    assert not service.enabled
    assert clock.getDelayedCalls() == []
    service.stopService()


def test_environment_is_consumed() -> None:
    """NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID are removed so that child processes never inherit them."""
    env = {"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "100", "PATH": "/bin"}
    service = SystemdNotifier(Clock(), ready=lambda: [], status=lambda: "x", environ=env, pid=100)
    assert service.enabled and service.watchdog == 0.5
    assert env == {"PATH": "/bin"}


def test_send_failure_is_logged_once_and_not_raised(tmp_path: Path) -> None:
    """A socket that does not exist fails quietly: False, one warning however often it is tried."""
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)
    try:
        sender = NotifySocket(str(tmp_path / "missing"))
        assert sender.send({"WATCHDOG": "1"}) is False
        assert sender.send({"WATCHDOG": "1"}) is False
    finally:
        globalLogPublisher.removeObserver(events.append)
        sender.close()
    warnings = [formatEvent(e) for e in events if e.get("log_level") == LogLevel.warn]
    assert len(warnings) == 1 and "cannot notify systemd" in warnings[0]


@pytest_twisted.ensureDeferred
async def test_real_relay_notifies_ready_watchdog_and_stopping(tmp_path: Path) -> None:
    """`atomrelay run` under a NOTIFY_SOCKET sends READY=1 once serving, WATCHDOG=1 pings and STOPPING=1 on SIGTERM."""
    from twisted.internet import reactor

    from tests.helpers import VENV_BIN, child_env, free_port, poll
    from tests.test_cli import Collect, answers

    from .support import start_simulators, write_config

    sims = start_simulators(reactor)
    listener = NotifyListener("\0atomrelay-run-" + uuid.uuid4().hex)
    onvif_port = free_port()
    config = write_config(tmp_path / "config.yaml", sims, onvif_port, tmp_path / "state")
    env = {**child_env(), "NOTIFY_SOCKET": listener.env_value, "WATCHDOG_USEC": "1000000"}
    proto = Collect()
    args = [str(VENV_BIN / "atomrelay"), "run", "-c", str(config)]
    process: Any = reactor.spawnProcess(proto, args[0], args, env=env, path=str(tmp_path))
    try:
        await poll(lambda: answers(onvif_port), timeout=30, what="the relay to answer SOAP")
        await poll(lambda: {"living/main", "living/sub"} <= set(sims.fake.paths), timeout=10, what="paths registered")
        await poll(lambda: listener.seen("READY"), timeout=2, what="READY=1")
        await poll(lambda: sum(1 for m in listener.drain() if "WATCHDOG" in m) >= 2, timeout=5, what="pings")
        process.signalProcess(signal.SIGTERM)
        code = await proto.ended
        messages = list(listener.drain())
    finally:
        if process.pid is not None:
            process.signalProcess("KILL")
        await sims.stop()
        listener.close()
    ready = next(m for m in messages if "READY" in m)
    assert "camera" in ready["STATUS"]
    assert messages[-1].get("STOPPING") == "1"
    assert code == (0, None), proto.output.decode()


def test_ready_waits_for_every_listener_and_never_comes_for_a_failed_one(path_listener: NotifyListener) -> None:
    """READY=1 needs each relay Listener bound; a Listener whose port is taken fails its bind and READY never comes."""
    import socket

    from twisted.internet import reactor
    from twisted.internet.protocol import Factory, Protocol

    from atomrelay.relay import Listener

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    good = Listener(reactor, "127.0.0.1", 0, Factory.forProtocol(Protocol))
    bad = Listener(reactor, "127.0.0.1", taken.getsockname()[1], Factory.forProtocol(Protocol))
    try:
        failures: list[Any] = []
        good.bind().addErrback(failures.append)
        bad.bind().addErrback(failures.append)
        assert len(failures) == 1 and "127.0.0.1" in str(failures[0].value)
        conditions = [bad.bind(), good.bind()]
        service = notifier(path_listener, Clock(), conditions, ["x"])
        service.startService()
        assert not path_listener.seen("READY")
        service.stopService()
        left: list[Any] = []
        conditions[0].addBoth(left.append)
        assert left == [None]  # the notifier consumed the failed bind: no "Unhandled error in Deferred" at GC
    finally:
        good.stopService()
        taken.close()
