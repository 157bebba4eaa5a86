"""TLS on demand (atomrelay.tls): no pyOpenSSL in a relay that never uses https, working https when it does.

The https server is twisted.web over TLS on 127.0.0.1 with a certificate made here
(names ``localhost`` and ``127.0.0.1``), trusted through ``trust_root``.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
import treq
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from twisted.internet import reactor, ssl
from twisted.internet.utils import getProcessOutputAndValue
from twisted.web.resource import Resource
from twisted.web.server import Site

from atomrelay import tls
from tests.helpers import child_env

ROOT = Path(__file__).resolve().parent.parent


def certificate(names: list[str]) -> tuple[bytes, bytes]:
    """A self-signed certificate for ``names`` (DNS names or IP addresses) and its key, as PEM."""
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


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b'{"hello": "over tls"}'


@dataclass
class TlsServer:
    port: int
    cert_pem: bytes


@pytest.fixture
def https_server() -> Iterator[TlsServer]:
    """twisted.web over TLS on 127.0.0.1 with a certificate for localhost and 127.0.0.1."""
    cert_pem, key_pem = certificate(["localhost", "127.0.0.1"])
    server_cert = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem)
    listening = reactor.listenSSL(0, Site(Hello()), server_cert.options(), interface="127.0.0.1")
    try:
        yield TlsServer(listening.getHost().port, cert_pem)
    finally:
        listening.stopListening()


@pytest_twisted.ensureDeferred
async def test_https_through_endpoints_checks_the_certificate(https_server: TlsServer) -> None:
    """A trusted certificate naming the host: the request goes through; another trust root: refused."""
    trusted = ssl.Certificate.loadPEM(https_server.cert_pem)
    client = treq.client.HTTPClient(tls.agent(reactor, trust_root=trusted, connect_timeout=5))
    response = await client.get(f"https://127.0.0.1:{https_server.port}/", timeout=10)
    assert response.code == 200
    assert await response.json() == {"hello": "over tls"}

    stranger = ssl.Certificate.loadPEM(certificate(["127.0.0.1"])[0])
    refused = treq.client.HTTPClient(tls.agent(reactor, trust_root=stranger, connect_timeout=5))
    with pytest.raises(Exception) as failure:
        await refused.get(f"https://127.0.0.1:{https_server.port}/", timeout=10)
    assert "certificate verify failed" in repr(failure.value.__dict__) + repr(failure.value)


def test_unsupported_scheme_is_refused() -> None:
    """Only http and https URLs get an endpoint."""
    from twisted.web.client import URI
    from twisted.web.error import SchemeNotSupported

    with pytest.raises(SchemeNotSupported):
        tls.Endpoints(reactor).endpointForURI(URI.fromBytes(b"ftp://127.0.0.1/x"))


@pytest_twisted.ensureDeferred
async def test_relay_process_loads_tls_only_for_https(https_server: TlsServer, tmp_path: Path) -> None:
    """A fresh interpreter importing the relay has no pyOpenSSL; its first https request loads it and works."""
    (tmp_path / "ca.pem").write_bytes(https_server.cert_pem)
    script = textwrap.dedent(
        f"""
        import json, sys
        from atomrelay import tap  # the twistd entry point: it hides pyOpenSSL while Twisted's networking loads
        from twisted.internet import reactor
        import treq
        from atomrelay import tls

        def loaded():
            return sorted({{m.split(".")[0] for m in sys.modules}} & {{"OpenSSL", "cryptography"}})

        report = {{"at_start": loaded()}}

        async def fetch():
            from twisted.internet import ssl
            trusted = ssl.Certificate.loadPEM(open({str(tmp_path / "ca.pem")!r}, "rb").read())
            client = treq.client.HTTPClient(tls.agent(reactor, trust_root=trusted, connect_timeout=5))
            response = await client.get("https://127.0.0.1:{https_server.port}/", timeout=10)
            report["body"] = (await response.content()).decode()
            report["after_https"] = loaded()
            print(json.dumps(report), flush=True)

        from twisted.internet.defer import Deferred
        from twisted.internet.task import react
        react(lambda _: Deferred.fromCoroutine(fetch()))
        """
    )
    (tmp_path / "child.py").write_text(script, encoding="utf-8")
    out, err, code = await getProcessOutputAndValue(
        sys.executable, [str(tmp_path / "child.py")], env=child_env(), path=str(ROOT), reactor=reactor
    )
    assert code == 0, err.decode()
    report = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else None
    assert report == {
        "at_start": [],
        "body": '{"hello": "over tls"}',
        "after_https": ["OpenSSL", "cryptography"],
    }, (out, err)
