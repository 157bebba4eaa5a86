"""Saved state in ``state_dir``: one JSON document per name, written atomically.

Write-temp-then-rename with fsync so that a crash mid-write leaves the previous
file intact; a full disk raises and keeps the old file. While the relay runs, writes
happen on a worker thread (an fsync on a Pi's SD card can take hundreds of
milliseconds), one at a time per document, the latest document winning.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from twisted.internet.defer import Deferred, DeferredLock, fail, gatherResults, maybeDeferred
from twisted.logger import Logger
from twisted.python.failure import Failure

Runner = Callable[[Callable[[], None]], "Deferred[None]"]
"""Runs a blocking function somewhere and fires with its result (``deferToThreadPool``)."""


_LEFTOVER = re.compile(r"\.[A-Za-z0-9_-]+\.[A-Za-z0-9_]{8}\.tmp")
"""The name of a temporary file ``write`` makes (``tempfile.mkstemp`` adds 8 random characters)."""


class StateError(Exception):
    """Saved state could not be written."""


class ChangeRetired(Exception):
    """A change asked for the lock of an object whose generation a config reload retired: nothing was changed,
    and the client may send it again (the text says so)."""


def run_inline(function: Callable[[], None]) -> Deferred[None]:
    """A ``Runner`` that runs ``function`` at once on the calling thread (before the reactor runs)."""
    return maybeDeferred(function)


@dataclass
class _Queue:
    """One document's writes: whether one is on the disk now, and the next one waiting."""

    busy: bool = False
    data: bytes | None = None
    waiting: list[Deferred[None]] = field(default_factory=list)
    """Told the outcome of the next write (``data``)."""
    writing: list[Deferred[None]] = field(default_factory=list)
    """Told the outcome of the write on the disk now."""


class StateStore:
    """Reads and atomically writes JSON documents under one directory.

    ``run`` decides where the blocking write happens: the relay passes one that uses the
    reactor's thread pool; the default writes on the calling thread.
    """

    log = Logger()

    def __init__(self, directory: Path, run: Runner = run_inline) -> None:
        self.directory = directory
        self._run = run
        self._queues: dict[str, _Queue] = {}
        self._changing = 0
        """Changes holding or waiting for a ``change_lock``."""
        self._epoch = 0
        """Bumped by ``pause_changes``: the locks of the generation a reload builds have a later epoch."""
        self._retired_below = 0
        """Locks of an earlier epoch than this belong to a retired generation."""
        self._door: list[Deferred[None]] | None = None
        """While changes are paused: the changes waiting to ask for a lock."""
        self._paused: list[Deferred[None]] = []
        self._unreadable: dict[str, str] = {}
        """Documents that exist but could not be read (permissions, I/O), and why: saving them would lose them."""

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str, default: Any) -> Any:
        """The saved document ``name``, or ``default`` if absent.

        A file that cannot be parsed, or holds another JSON type than ``default``, is moved aside as ``<name>.json.corrupt-<time>`` (with
        one error line), so that the next save does not overwrite what an operator may
        want to recover. A file that exists but cannot be read (its owner or mode, an I/O
        error) is left where it is and never overwritten: every save of it fails with a
        StateError that says what to fix, until a restart reads it.
        """
        path = self._path(name)
        try:
            with path.open("r", encoding="utf-8") as handle:
                document = json.load(handle)
            if not isinstance(document, type(default)):
                raise ValueError(f"a JSON {type(document).__name__}, not a {type(default).__name__}")
            return document
        except FileNotFoundError:
            return default
        except (ValueError, RecursionError) as exc:  # json.load raises RecursionError for a very deep document
            self.set_aside(name, str(exc))
            return default
        except OSError as exc:
            self._unreadable[name] = exc.strerror or str(exc)
            self.log.error("cannot read saved state {path}: {error}; using defaults, and the file is kept as it is "
                           "(nothing is saved to it until it can be read: fix its owner or mode, then restart)",
                           path=str(path), error=str(exc))
            return default

    def set_aside(self, name: str, reason: str) -> None:
        """Move the document ``name``, which its reader cannot use for ``reason``, aside as
        ``<name>.json.corrupt-<time>`` (one error line says so), so that no save overwrites it."""
        path = self._path(name)
        aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}")
        try:
            os.replace(path, aside)
        except OSError as move_error:
            self._unreadable[name] = f"{reason}; it cannot be moved aside either: {move_error.strerror or move_error}"
            self.log.error("cannot read saved state {path}: {error}; cannot move it aside either ({move}); "
                           "using defaults", path=str(path), error=reason, move=str(move_error))
        else:
            self.log.error("cannot read saved state {path}: {error}; moved it to {aside}, using defaults",
                           path=str(path), error=reason, aside=str(aside))

    def unreadable(self, name: str) -> str | None:
        """Why the document ``name`` could not be read (it is never saved to then), or None."""
        return self._unreadable.get(name)

    def save(self, name: str, document: Any) -> Deferred[None]:
        """Replace the document ``name``; fires once it is on disk, or fails with StateError.

        Saves of the same document are written one at a time; a save made while another
        is being written waits for it, and of several waiting ones only the latest is
        written (each waiting caller is told the outcome of that write).
        """
        if name in self._unreadable:
            return fail(StateError(
                f"cannot save {self._path(name)}: it could not be read at start ({self._unreadable[name]}), and "
                "saving would replace what it holds; make it readable by the relay's user, then restart the relay"))
        try:
            data = self.encode(document)
        except (TypeError, ValueError) as exc:
            return fail(StateError(f"cannot save {self._path(name)}: {exc}"))
        queue = self._queues.setdefault(name, _Queue())
        done: Deferred[None] = Deferred()
        queue.data = data
        queue.waiting.append(done)
        if not queue.busy:
            self._write_next(name, queue)
        return done

    def commit(self, name: str, document: Any, apply: Callable[[], None]) -> Deferred[None]:
        """Save ``document``, then ``apply()`` the change it records to what the relay serves.

        ``apply`` runs when the write has succeeded, whether or not the caller still waits:
        a SOAP client that hangs up while its change is being written (its handler is
        cancelled) still leaves memory and disk agreeing. The returned Deferred fires after
        ``apply``, or fails with StateError (then nothing is applied); cancelling it only
        stops the wait.
        """
        written = self.save(name, document)
        written.addCallback(lambda _: apply())
        waiting: Deferred[None] = Deferred()

        def tell(result: object) -> None:
            if not waiting.called:
                if isinstance(result, Failure):
                    waiting.errback(result)
                else:
                    waiting.callback(None)

        written.addBoth(tell)
        return waiting

    def flushed(self) -> Deferred[None]:
        """Fires once every save made so far is on the disk, or has failed (saves made later are not waited for,
        so a client that keeps saving cannot hold it up)."""
        waiters: list[Deferred[None]] = []
        for queue in self._queues.values():
            waiter: Deferred[None] = Deferred()
            (queue.waiting if queue.data is not None else queue.writing).append(waiter)
            waiters.append(waiter)
        for waiter in waiters:  # a failed write is its saver's to report; the others are still waited for
            waiter.addErrback(lambda _: None)
        return gatherResults(waiters).addCallback(lambda _: None)

    def change_lock(self) -> ChangeLock:
        """A lock for one kind of change (``async with lock:``) that ``pause_changes`` knows of: a change that reads
        something first (a camera's position) and then commits is never half done when a config reload builds the
        next generation from the saved state, nor made on a generation a reload retired."""
        return ChangeLock(self)

    def pause_changes(self) -> Deferred[None]:
        """Before a config reload builds the next generation: fires once the changes already under way (holding or
        waiting for a ``change_lock``) have ended and every save made until then is on the disk.

        Changes that ask for a lock from now on wait at the door until ``resume_changes``; every lock made before
        this call is retired then, unless the reload failed.
        """
        if self._door is not None:
            raise RuntimeError("changes are paused already")
        self._door = []
        self._epoch += 1
        waiter: Deferred[None] = Deferred()
        self._paused.append(waiter)
        self._maybe_paused()
        return waiter

    def resume_changes(self, retire: bool) -> None:
        """Let the changes waiting at the door go on (nothing happens when changes are not paused). With ``retire``
        (the new generation serves now), every lock made before ``pause_changes`` refuses its changes from now on
        with ChangeRetired: the object they would change is no longer served, so the client must send the change
        again, and reaches the new generation."""
        door, self._door = self._door, None
        if door is None:
            return
        if retire:
            self._retired_below = self._epoch
        for waiter in door:
            if not waiter.called:
                waiter.callback(None)

    def _change_started(self) -> None:
        self._changing += 1

    def _change_ended(self) -> None:
        self._changing -= 1
        self._maybe_paused()

    def _maybe_paused(self) -> None:
        """Fire ``pause_changes``' waiters once no change is under way (their writes are done with them) and the
        saves made so far are on the disk, but not later ones (a client that keeps subscribing must not hold a
        reload up)."""
        if self._changing or not self._paused:
            return
        paused, self._paused = self._paused, []

        def resume(_: object) -> None:
            for waiter in paused:
                waiter.callback(None)

        self.flushed().addCallback(resume)

    def save_in_background(self, name: str, document: Any, what: str) -> None:
        """Save ``document`` for a caller that does not wait: a failure is logged as "cannot save ``what``"."""

        def failed(failure: Failure) -> None:
            self.log.error("cannot save {what}: {error}", what=what, error=str(failure.value))

        self.save(name, document).addErrback(failed)

    def _write_next(self, name: str, queue: _Queue) -> None:
        data, waiting = queue.data, queue.waiting
        assert data is not None
        queue.busy, queue.data, queue.waiting, queue.writing = True, None, [], waiting

        def finished(result: object) -> None:
            for caller in waiting:
                if isinstance(result, Failure):
                    caller.errback(result)
                else:
                    caller.callback(None)
            if queue.waiting:
                self._write_next(name, queue)
            else:
                queue.busy = False
                del self._queues[name]

        self._run(lambda: self.write(name, data)).addBoth(finished)

    def write(self, name: str, data: bytes) -> None:
        """Atomically replace the document ``name`` with ``data`` now (blocking); raise StateError on failure."""
        path = self._path(name)
        tmp_name = None
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            fd, tmp_name = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp_name, 0o600)
            os.replace(tmp_name, path)
            tmp_name = None
            dir_fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            raise StateError(f"cannot save {path}: {exc.strerror or exc}") from exc
        finally:
            if tmp_name is not None:
                try:
                    os.unlink(tmp_name)
                except OSError:
                    pass

    def remove_leftovers(self, now: float, min_age: float = 60.0) -> None:
        """Remove the temporary files of writes a crash interrupted (``write``'s ``.<document>.<random>.tmp``, at
        least ``min_age`` seconds old, so that the write of a relay still running on this directory is left be);
        call it before the first save."""
        try:
            candidates = [path for path in self.directory.glob(".*.tmp") if _LEFTOVER.fullmatch(path.name)]
        except OSError:
            return
        for leftover in candidates:
            try:
                if now - leftover.stat().st_mtime < min_age:
                    continue
                leftover.unlink()
            except OSError as exc:
                self.log.warn("cannot remove {path}, left by an interrupted write: {error}", path=str(leftover),
                              error=exc.strerror or str(exc))

    @staticmethod
    def encode(document: Any) -> bytes:
        """The bytes ``save`` writes for ``document``."""
        return json.dumps(document, indent=1, sort_keys=True).encode("utf-8")


class ChangeLock:
    """``StateStore.change_lock``: a DeferredLock for the changes of one object. A change that asks for it after a
    config reload retired the object's generation is refused at once with ChangeRetired."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._epoch = store._epoch
        self._lock = DeferredLock()

    async def __aenter__(self) -> None:
        store = self._store
        while store._door is not None:
            waiter: Deferred[None] = Deferred()
            store._door.append(waiter)
            await waiter
        if self._epoch < store._retired_below:
            raise ChangeRetired("the relay's config was reloaded as this change came in: nothing was changed; "
                                "send it again")
        store._change_started()
        try:
            await self._lock.acquire()
        except BaseException:
            store._change_ended()
            raise

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            self._lock.release()
        finally:
            self._store._change_ended()
