"""Shared helpers for integration tests: free ports, deadline polling, subprocesses."""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

from twisted.internet import reactor as _reactor
from twisted.internet.task import deferLater

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def poll(condition: Callable[[], Awaitable[bool] | bool], timeout: float = 15.0, interval: float = 0.05,
               what: str = "condition") -> None:
    """Wait until ``condition()`` is true, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await deferLater(_reactor, interval, lambda: None)


def child_env() -> dict[str, str]:
    """Environment for child processes: this venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def soap(body: str, version: str = "1.2") -> bytes:
    """A bare SOAP envelope around ``body`` (no security header)."""
    ns = "http://www.w3.org/2003/05/soap-envelope" if version == "1.2" else "http://schemas.xmlsoap.org/soap/envelope/"
    return f'<s:Envelope xmlns:s="{ns}"><s:Body>{body}</s:Body></s:Envelope>'.encode()


GET_DATE = soap('<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>')

