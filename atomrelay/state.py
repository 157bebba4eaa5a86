"""Saved state in ``state_dir``: one JSON document per name, written atomically.

Write-temp-then-rename with fsync so that a crash mid-write leaves the previous
file intact; a full disk raises and keeps the old file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from twisted.logger import Logger


class StateError(Exception):
    """Saved state could not be written."""


class StateStore:
    """Reads and atomically writes JSON documents under one directory."""

    log = Logger()

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, name: str) -> Path:
        return self.directory / f"{name}.json"

    def load(self, name: str, default: Any) -> Any:
        """The saved document ``name``, or ``default`` if absent or unreadable."""
        path = self._path(name)
        try:
            with path.open("r", encoding="utf-8") as handle:
                return json.load(handle)
        except FileNotFoundError:
            return default
        except (OSError, ValueError) as exc:
            self.log.error("cannot read saved state {path}: {error}; using defaults", path=str(path), error=str(exc))
            return default

    def save(self, name: str, document: Any) -> None:
        """Atomically replace the document ``name``; raise StateError on failure."""
        path = self._path(name)
        data = json.dumps(document, indent=1, sort_keys=True).encode("utf-8")
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
