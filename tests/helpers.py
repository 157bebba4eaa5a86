"""Shared helpers for integration tests: free ports, deadline polling, subprocesses."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Awaitable, Callable

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


def settled(work: Any) -> Any:
    """The result of a coroutine or Deferred that completes without the reactor running
    (an inline StateStore, a Clock), or its exception raised here."""
    from twisted.internet.defer import Deferred, ensureDeferred
    from twisted.python.failure import Failure

    outcome: list[Any] = []
    deferred = work if isinstance(work, Deferred) else ensureDeferred(work)
    deferred.addBoth(outcome.append)
    assert outcome, "the work did not complete"
    if isinstance(outcome[0], Failure):
        outcome[0].raiseException()
    return outcome[0]


def hold_writes(monkeypatch: Any, name: str) -> Any:
    """Hold every write of the state document ``name`` on the disk until the returned Event is set
    (at most 30 s), as a slow SD card would; other documents are written at once."""
    import threading

    from atomrelay.state import StateStore

    release = threading.Event()
    real_write = StateStore.write

    def held_write(self: StateStore, document: str, data: bytes) -> None:
        if document == name:
            release.wait(30)
        real_write(self, document, data)

    monkeypatch.setattr(StateStore, "write", held_write)
    return release


def unreadable(monkeypatch: Any, path: Any) -> None:
    """Make opening ``path`` fail with "Permission denied" (as a file of another owner would for the relay's user;
    the tests may run as root, whom file modes do not stop), until ``monkeypatch.undo()``."""
    from pathlib import Path

    real_open = Path.open

    def refuse(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", refuse)


def child_env() -> dict[str, str]:
    """Environment for child processes: this venv first on PATH."""
    env = dict(os.environ)
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


def certificate(names: list[str]) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``names`` (DNS names or IP addresses) and its key, as PEM."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    alternatives: list[x509.GeneralName] = []
    for name in names:
        try:
            alternatives.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alternatives.append(x509.DNSName(name))
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def soap(body: str, version: str = "1.2") -> bytes:
    """A bare SOAP envelope around ``body`` (no security header)."""
    ns = "http://www.w3.org/2003/05/soap-envelope" if version == "1.2" else "http://schemas.xmlsoap.org/soap/envelope/"
    return f'<s:Envelope xmlns:s="{ns}"><s:Body>{body}</s:Body></s:Envelope>'.encode()


GET_DATE = soap('<GetSystemDateAndTime xmlns="http://www.onvif.org/ver10/device/wsdl"/>')



def count_answers_built(monkeypatch: Any) -> list[str]:
    """The tag of every answer the SOAP server serializes from now on, not taken from its reply cache
    (``monkeypatch``: pytest's fixture)."""
    from atomrelay.onvif import server

    seen: list[str] = []
    real = server.response_envelope

    def counting(version: Any, payload: Any, request: Any = None) -> bytes:
        seen.append(str(payload.tag))
        return real(version, payload, request)

    monkeypatch.setattr(server, "response_envelope", counting)
    return seen


def metric(registry: Any, name: str, **labels: str) -> float:
    """One sample of a metrics Registry's exposition, read with prometheus_client's parser (0 when absent)."""
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(registry.exposition()):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0
