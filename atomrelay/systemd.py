"""systemd's notification protocol (``sd_notify``) with the standard library only.

Under ``Type=notify`` systemd passes ``$NOTIFY_SOCKET``, an ``AF_UNIX`` datagram
socket (a path, or an abstract name written with a leading ``@``). The relay sends:

* ``READY=1`` (with a ``STATUS=`` line) once the SOAP port listens and the mediamtx
  reconciler is ready: its paths are registered, or its wait for mediamtx gave up and
  it carries on in the background;
* ``WATCHDOG=1`` from a reactor ``LoopingCall`` at half of ``$WATCHDOG_USEC`` (so a
  wedged reactor gets the process restarted), with the ``STATUS=`` line when it changed;
* ``RELOADING=1`` / ``READY=1`` around a configuration reload;
* ``STOPPING=1`` when the service stops.

Without ``$NOTIFY_SOCKET`` (a terminal, a test, ``make demo``) everything is a no-op.

When the onefile build runs under systemd the main PID is PyInstaller's bootloader and
the relay is its child: the unit then needs ``NotifyAccess=all``, and the watchdog is
accepted when ``$WATCHDOG_PID`` names the parent of a frozen process.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, FirstError, gatherResults
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

ENVIRONMENT_KEYS = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")
"""What systemd passes; removed from the environment once read, so children never see it."""

STATUS_INTERVAL = 30.0
"""Seconds between STATUS refreshes when systemd asks for no watchdog."""


class NotifyError(ValueError):
    """``$NOTIFY_SOCKET`` holds an address this implementation cannot use."""


def socket_address(value: str) -> str:
    """The ``sendto`` address for a ``$NOTIFY_SOCKET`` value (``@name`` is an abstract socket)."""
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    raise NotifyError(f"unsupported NOTIFY_SOCKET {value!r} (expected an absolute path or @abstract name)")


def watchdog_interval(
    environ: Mapping[str, str], pid: int, parent_pid: int, frozen: bool = False
) -> float | None:
    """Seconds between ``WATCHDOG=1`` pings (half of ``$WATCHDOG_USEC``), or None when not asked for.

    ``$WATCHDOG_PID``, when set, must name this process; a frozen process also accepts
    its parent (the onefile bootloader, which systemd knows as the main PID).
    """
    text = environ.get("WATCHDOG_USEC", "")
    try:
        usec = int(text)
    except ValueError:
        return None
    if usec <= 0:
        return None
    owner = environ.get("WATCHDOG_PID", "")
    if owner:
        try:
            owner_pid = int(owner)
        except ValueError:
            return None
        if owner_pid != pid and not (frozen and owner_pid == parent_pid):
            return None
    return usec / 2_000_000


def monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, as ``RELOADING=1`` wants it in ``MONOTONIC_USEC=``."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class NotifySocket:
    """Sends notification datagrams to one ``$NOTIFY_SOCKET`` address; never raises."""

    log = Logger()

    def __init__(self, address: str) -> None:
        self.address = address
        self._socket: socket.socket | None = None
        self._failed: set[int] = set()

    def send(self, fields: Mapping[str, str]) -> bool:
        """Send ``KEY=value`` lines in one datagram; False (logged once per error) if it failed."""
        message = "\n".join(f"{key}={value}" for key, value in fields.items()).encode("utf-8", "replace")
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._socket.setblocking(False)
            self._socket.sendto(message, self.address)
        except OSError as exc:
            code = exc.errno or 0
            if code not in self._failed:
                self._failed.add(code)
                self.log.warn(
                    "cannot notify systemd at {address}: {error}",
                    address=self.address.replace("\0", "@"),
                    error=exc.strerror or errno.errorcode.get(code, str(exc)),
                )
            return False
        self._failed.clear()
        return True

    def close(self) -> None:
        """Close the socket (a later send opens a new one)."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None


def observed(deferred: Deferred[Any]) -> Deferred[Any]:
    """A new Deferred with ``deferred``'s result, leaving ``deferred``'s own result as it was (for its other users)."""
    copy: Deferred[Any] = Deferred()

    def passthrough(result: object) -> object:
        if isinstance(result, Failure):
            copy.errback(result)
        else:
            copy.callback(result)
        return result

    deferred.addBoth(passthrough)
    return copy


class SystemdNotifier(Service):
    """Tells systemd about readiness, status, watchdog liveness and shutdown.

    ``ready`` is called when the service starts and returns the Deferreds that must
    all fire before ``READY=1`` is sent; the notifier takes them over (it consumes their
    results and cancels them when it stops), so pass ``observed(d)`` for a Deferred ``d``
    that others wait for too. ``status`` returns the current ``STATUS=`` text. Start it
    after the services it waits for (it reads their Deferreds then).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        ready: Callable[[], Iterable[Deferred[Any]]],
        status: Callable[[], str],
        environ: MutableMapping[str, str] | None = None,
        pid: int | None = None,
        parent_pid: int | None = None,
        frozen: bool | None = None,
    ) -> None:
        env = os.environ if environ is None else environ
        self._clock = clock
        self._ready = ready
        self._status = status
        self._socket: NotifySocket | None = None
        self._interval: float | None = None
        raw = env.get("NOTIFY_SOCKET", "")
        if raw:
            try:
                self._socket = NotifySocket(socket_address(raw))
            except NotifyError as exc:
                self.log.warn("not notifying systemd: {error}", error=str(exc))
            else:
                self._interval = watchdog_interval(
                    env,
                    os.getpid() if pid is None else pid,
                    os.getppid() if parent_pid is None else parent_pid,
                    bool(getattr(sys, "frozen", False)) if frozen is None else frozen,
                )
        for key in ENVIRONMENT_KEYS:
            env.pop(key, None)
        self._loop: LoopingCall | None = None
        self._waiting: Deferred[None] | None = None
        self._last_status: str | None = None
        self.is_ready = False

    @property
    def enabled(self) -> bool:
        """Whether systemd asked for notifications."""
        return self._socket is not None

    @property
    def watchdog(self) -> float | None:
        """Seconds between watchdog pings, or None without a watchdog."""
        return self._interval

    def startService(self) -> None:
        """Start the watchdog/status loop and wait for readiness."""
        super().startService()  # type: ignore[no-untyped-call]
        if self._socket is None:
            return
        self.log.info(
            "notifying systemd at {address}; watchdog {watchdog}",
            address=self._socket.address.replace("\0", "@"),
            watchdog=f"every {self._interval:g}s" if self._interval is not None else "off",
        )
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._clock
        self._loop.start(self._interval if self._interval is not None else STATUS_INTERVAL, now=True)
        self._waiting = Deferred.fromCoroutine(self._announce_ready())

    def stopService(self) -> None:
        """Send STOPPING=1 and stop pinging."""
        super().stopService()  # type: ignore[no-untyped-call]
        if self._waiting is not None and not self._waiting.called:
            self._waiting.cancel()
        self._waiting = None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._socket is not None:
            self._socket.send({"STOPPING": "1", "STATUS": "stopping"})
            self._socket.close()
        self.is_ready = False

    def reloading(self) -> None:
        """Send ``RELOADING=1`` before applying a new configuration (SIGHUP)."""
        if self._socket is not None:
            self._socket.send({"RELOADING": "1", "MONOTONIC_USEC": str(monotonic_usec()), "STATUS": "reloading"})

    def reloaded(self) -> None:
        """Send ``READY=1`` with the current status after a reload, applied or refused."""
        if self._socket is not None:
            self._send_ready()

    async def _announce_ready(self) -> None:
        try:
            await gatherResults(list(self._ready()), consumeErrors=True)
        except CancelledError:
            return
        except FirstError as exc:  # any failure means: never ready
            error = exc.subFailure.value
            if not isinstance(error, CancelledError):  # stopped while waiting
                self.log.error("not telling systemd the relay is ready: {error}", error=str(error))
            return
        self._send_ready()
        self.log.info("told systemd the relay is ready: {status}", status=self._last_status)

    def _send_ready(self) -> None:
        status = self._current_status()
        assert self._socket is not None
        if self._socket.send({"READY": "1", "STATUS": status}):
            self._last_status = status
        self.is_ready = True

    def _current_status(self) -> str:
        try:
            return " ".join(self._status().split())
        except Exception:  # noqa: BLE001 - a status is never worth a crash
            self.log.failure("cannot compute the systemd status line")
            return "running"

    def _tick(self) -> None:
        """One loop pass: WATCHDOG=1, and STATUS= when it changed since READY. Never raises."""
        try:
            fields: dict[str, str] = {}
            if self._interval is not None:
                fields["WATCHDOG"] = "1"
            if self.is_ready:
                status = self._current_status()
                if status != self._last_status:
                    fields["STATUS"] = status
            if fields and cast(NotifySocket, self._socket).send(fields) and "STATUS" in fields:
                self._last_status = fields["STATUS"]
        except Exception:  # noqa: BLE001 - the loop must keep running
            self.log.failure("systemd notification failed")
