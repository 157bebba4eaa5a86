"""A service that runs a coroutine round now and then every interval, and abandons it on stop.

The camera health monitor and the camera model registry both work in rounds: a round
starts on the service start, then every ``interval`` seconds (a slow round delays the
next one: ``LoopingCall`` never overlaps calls). Stopping the service stops the loop and
cancels a round in progress; the Deferred ``stopService`` returns fires once that round
has ended, so a config reload never leaves a round talking to an old generation's
cameras. A cancelled round is no failure; any other failure of a round is logged and
ends the loop (rounds are written never to raise).
"""

from __future__ import annotations

from typing import Any, cast

from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred, succeed
from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure


class PeriodicService(Service):
    """Runs ``round()`` at start and every ``interval`` seconds while ``wanted()``.

    Subclasses implement ``round()`` and may override ``wanted()`` (checked at start and
    before each round: once it is False the loop ends until the next start). ``what``
    names the loop in the log line of an unexpected failure.
    """

    log = Logger()
    what = "periodic loop"

    def __init__(self, clock: IReactorTime, interval: float) -> None:
        self._periodic_clock = clock
        self._interval = interval
        self._loop: LoopingCall | None = None
        self._round: Deferred[None] | None = None

    async def round(self) -> None:
        """One round of work; should never raise."""
        raise NotImplementedError

    def wanted(self) -> bool:
        """Whether rounds are still needed (default: always)."""
        return True

    def startService(self) -> None:
        """Run a round now, then every interval."""
        cast(Any, Service).startService(self)
        if not self.wanted():
            return
        self._loop = LoopingCall(self._tick)
        self._loop.clock = self._periodic_clock
        self._loop.start(self._interval, now=True).addErrback(
            lambda failure: self.log.failure("{what} stopped", failure, what=self.what)
        )

    def stopService(self) -> Deferred[None]:
        """Stop the loop; the Deferred fires once a round in progress has been abandoned."""
        cast(Any, Service).stopService(self)
        self._stop_loop()
        running = self._round
        if running is None:
            return succeed(None)
        running.cancel()
        return Deferred.fromCoroutine(_settled(running))

    def _stop_loop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def _tick(self) -> Deferred[None] | None:
        if not self.wanted():
            self._stop_loop()
            return None
        running = self._round = Deferred.fromCoroutine(self.round())

        def forget(result: object) -> object:
            if self._round is running:
                self._round = None
            if isinstance(result, Failure) and isinstance(result.value, CancelledError):
                return None  # stopService abandoned the round: not a failure of the loop
            return result

        return running.addBoth(forget)


async def _settled(deferred: Deferred[None]) -> None:
    try:
        await deferred
    except Exception:  # noqa: BLE001 - only waiting for it to end
        pass
