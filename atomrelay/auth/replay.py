"""The replay memory behind WS-Security UsernameTokens and HTTP Digest nonces: bounded, and sound under any load."""

from __future__ import annotations

import heapq

from twisted.logger import Logger

HORIZONS_KEPT = 256
"""Owners whose own horizon is kept; beyond that their horizons merge into one floor (stricter, still sound)."""


class ReplayMemory:
    """What was accepted lately, as 64-bit fingerprints with a time, an owner and a small integer; capped in size.

    The time is a token's Created or a Digest nonce's issue time; the owner is the token's
    user ("" for Digest nonces). Entries are forgotten in time order (a heap): when their
    time leaves the window, or the oldest when the cap is reached. ``horizon(owner)`` is
    the latest time of an owner's forgotten entry: the memory no longer knows every token
    of that owner of that time or earlier, so the caller refuses those unless their entry is
    still held. Under a load the cap cannot hold, horizons therefore come closer to now and
    only fresh tokens pass; nothing the memory forgot can be replayed. Horizons are kept per
    owner so that one account's flood of tokens dated ahead does not hold off the others.

    A fingerprint is ``hash(key)`` (SipHash with this process's random key), the same size
    whatever the key's: two keys share one with a probability of about 1e-10 at 50,000
    entries, which costs one request refused as a replay.
    """

    log = Logger()

    def __init__(self, cap: int, what: str) -> None:
        self._times: list[tuple[float, int, str]] = []
        self._values: dict[int, int] = {}
        self._cap = cap
        self._what = what
        self._horizons: dict[str, float] = {}
        self._floor = float("-inf")
        """The horizon of every owner whose own horizon is no longer kept."""
        self._filling_since: float | None = None
        self._filled = 0
        self._warned = False

    def forget_before(self, oldest: float) -> None:
        """Forget the entries whose time is earlier than ``oldest``."""
        times = self._times
        while times and times[0][0] < oldest:
            self._forget_first()

    def horizon(self, owner: str) -> float:
        """The latest time of a forgotten entry of ``owner``."""
        return max(self._floor, self._horizons.get(owner, self._floor))

    def get(self, fingerprint: int) -> int | None:
        """The value held for ``fingerprint``, None when it is not held."""
        return self._values.get(fingerprint)

    def put(self, fingerprint: int, when: float, owner: str, value: int, now: float) -> None:
        """Hold ``value`` for ``fingerprint`` (a known one keeps its time), forgetting the oldest beyond the cap.

        A new ``fingerprint``'s ``when`` must be later than ``horizon(owner)``.
        """
        if fingerprint in self._values:
            self._values[fingerprint] = value
        else:
            self._hold(fingerprint, when, owner, value, now)

    def add(self, fingerprint: int, when: float, owner: str, now: float) -> bool:
        """Hold a new ``fingerprint`` (value 0), as ``put`` does; False, holding nothing, when it is held already
        or ``when`` is not later than ``horizon(owner)``.

        One call where a WS-Security token needs three (``get``, ``horizon``, ``put``): it runs for every signed
        request.
        """
        floor = self._floor
        if fingerprint in self._values or when <= max(floor, self._horizons.get(owner, floor)):
            return False
        self._hold(fingerprint, when, owner, 0, now)
        return True

    def _hold(self, fingerprint: int, when: float, owner: str, value: int, now: float) -> None:
        values = self._values
        values[fingerprint] = value
        self._count_fill(now)
        if len(values) <= self._cap:
            heapq.heappush(self._times, (when, fingerprint, owner))
        else:  # full: the new entry in, the oldest (perhaps this one) out, in one step
            self._forget(heapq.heappushpop(self._times, (when, fingerprint, owner)))

    def _forget_first(self) -> None:
        self._forget(heapq.heappop(self._times))

    def _forget(self, entry: tuple[float, int, str]) -> None:
        when, fingerprint, owner = entry
        del self._values[fingerprint]
        horizons = self._horizons
        if owner not in horizons and len(horizons) >= HORIZONS_KEPT:
            self._floor = max(self._floor, *horizons.values())
            horizons.clear()
        horizons[owner] = max(when, horizons.get(owner, when))

    def _count_fill(self, now: float) -> None:
        """Warn once when the memory reaches its cap, with the rate since it was last half full."""
        if self._filling_since is None or len(self._values) <= self._cap // 2:
            self._filling_since, self._filled, self._warned = now, 0, False
            return
        self._filled += 1
        if len(self._values) >= self._cap and not self._warned:
            self._warned = True
            elapsed = max(now - self._filling_since, 0.001)
            self.log.warn(
                "replay memory of {what} full at {cap} ({filled} added in {elapsed:.1f} s, {rate:.0f} a second): "
                "while it stays full, only ones dated after the last one it forgets are accepted",
                what=self._what, cap=self._cap, filled=self._filled, elapsed=elapsed, rate=self._filled / elapsed,
            )

    def __len__(self) -> int:
        return len(self._values)
