"""TLS on demand (atomrelay.tls): no pyOpenSSL in a relay that never uses https, working https when it does.

The https server is twisted.web over TLS on 127.0.0.1 with a certificate made here
(names ``localhost`` and ``127.0.0.1``), trusted through ``trust_root``.
"""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import pytest
import pytest_twisted
import treq
from twisted.internet import reactor, ssl
from twisted.internet.utils import getProcessOutputAndValue
from twisted.protocols.policies import WrappingFactory
from twisted.web.resource import Resource
from twisted.web.server import Site

from atomrelay import tls
from tests.helpers import certificate, child_env

ROOT = Path(__file__).resolve().parent.parent


class Hello(Resource):
    isLeaf = True

    def render_GET(self, request: Any) -> bytes:
        return b'{"hello": "over tls"}'


@dataclass
class TlsServer:
    port: int
    cert_pem: bytes


def without_alpn(site: Site) -> WrappingFactory:
    """``site`` as a factory that offers no ALPN protocols: Twisted before 26.4 sets a Site's ALPN
    protocols on the shared TLS context after making a connection from it, which current pyOpenSSL
    refuses ("Context has already been used"), so the oldest declared Twisted could not serve this
    test's https. Only the test serves TLS; the relay is a TLS client."""
    return WrappingFactory(site)


@pytest.fixture
def https_server() -> Iterator[TlsServer]:
    """twisted.web over TLS on 127.0.0.1 with a certificate for localhost and 127.0.0.1."""
    cert_pem, key_pem = certificate(["localhost", "127.0.0.1"])
    server_cert = ssl.PrivateCertificate.loadPEM(cert_pem + key_pem)
    listening = reactor.listenSSL(0, without_alpn(Site(Hello())), server_cert.options(), interface="127.0.0.1")
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
