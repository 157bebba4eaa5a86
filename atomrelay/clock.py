"""The part of a reactor that timed code uses, typed for mypy: ``seconds`` and ``callLater``.

The reactor and ``twisted.internet.task.Clock`` both fit, so timed code takes a ``Clock``
and unit tests drive it with ``task.Clock``.
"""

from __future__ import annotations

from typing import Callable, Protocol


class DelayedCall(Protocol):
    """What ``callLater`` returns."""

    def active(self) -> bool: ...

    def cancel(self) -> None: ...

    def reset(self, secondsLater: float) -> None: ...


class Clock(Protocol):
    """Time and timed calls (``IReactorTime``)."""

    def seconds(self) -> float: ...

    def callLater(self, delay: float, callable: Callable[..., object], *args: object, **kw: object) -> DelayedCall: ...
