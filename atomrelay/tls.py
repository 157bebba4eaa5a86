"""TLS for the relay's HTTP clients, loaded the first time an ``https`` URL is used.

treq requires ``twisted[tls]``, so pyOpenSSL and cryptography are always installed, and
Twisted imports them as soon as its TCP transport, its endpoints or its web client are
imported: 12 MiB of RSS on a Raspberry Pi that also runs ffmpeg and mediamtx, although
the relay needs TLS only for an ``https`` mediamtx API or an ``https`` event consumer.

``import_twisted_without_tls()`` imports those Twisted modules while pyOpenSSL is hidden,
so they take the branches Twisted has for a machine without it: TCP connections without
``startTLS``, and endpoints, ``wrapClientTLS`` and the web client's HTTPS policy that
refuse TLS. The relay uses none of them; its HTTP clients get their connections from
``Endpoints``, which imports TLS support (pyOpenSSL, certificate checks against the
system's trust store) when the first ``https`` connection is made. The entry points
(``atomrelay`` and the twistd plugin's ``atomrelay.tap``) call it before anything else
imports Twisted's networking; when something already has, it changes nothing.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
from types import ModuleType
from typing import Any, Callable, Sequence, cast

# Only modules that import no networking: this module is imported before Twisted's networking.
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.web.error import SchemeNotSupported
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

_HIDDEN = ("OpenSSL",)
"""Top-level packages hidden while Twisted's networking is imported (cryptography comes with pyOpenSSL)."""
TWISTED_MODULES = (
    "twisted.internet.posixbase",
    "twisted.internet.tcp",
    "twisted.internet.endpoints",
    "twisted.web.client",
    "treq",
)
"""The modules that would import pyOpenSSL for the relay (the reactor, listeners, treq)."""


class _Hide(importlib.abc.MetaPathFinder):
    """Makes the ``_HIDDEN`` packages unimportable while it is on ``sys.meta_path``."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.partition(".")[0] in _HIDDEN:
            raise ImportError(f"{fullname} is imported only when an https URL is used (atomrelay.tls)")
        return None


def import_twisted_without_tls(modules: Sequence[str] = TWISTED_MODULES) -> bool:
    """Import Twisted's networking without pyOpenSSL; False when it was imported already (nothing changed)."""
    if any(name in sys.modules for name in (*modules, *_HIDDEN)):
        return False
    finder = _Hide()
    sys.meta_path.insert(0, finder)
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        sys.meta_path.remove(finder)
    return True


def client_creator(host: str, trust_root: Any = None) -> Any:
    """TLS client options for ``host``: its certificate must chain to ``trust_root`` (default: the system's)
    and name ``host``. Imports pyOpenSSL on first use."""
    from twisted.internet.ssl import optionsForClientTLS

    return optionsForClientTLS(host, trustRoot=trust_root)


@implementer(IStreamClientEndpoint)
class WrappingEndpoint:
    """``endpoint`` whose connections run the protocol of the wrapping factory ``wrap`` makes of the caller's
    (twisted's ``WrappingFactory`` shape: the wrapper protocol's ``wrappedProtocol`` is the caller's)."""

    def __init__(self, endpoint: Any, wrap: Callable[[Any], Any]) -> None:
        self._endpoint = endpoint
        self._wrap = wrap

    def connect(self, protocol_factory: Any) -> Deferred[Any]:
        """Connect through the wrapper; fires with the protocol ``protocol_factory`` built."""
        connecting: Deferred[Any] = self._endpoint.connect(self._wrap(protocol_factory))
        return connecting.addCallback(lambda wrapper: wrapper.wrappedProtocol)


def tls_endpoint(endpoint: Any, creator: Any) -> WrappingEndpoint:
    """``endpoint`` with TLS on top: the TLS handshake starts once the TCP connection is up."""
    from twisted.protocols.tls import TLSMemoryBIOFactory

    return WrappingEndpoint(endpoint, lambda factory: TLSMemoryBIOFactory(creator, True, factory))


@implementer(IAgentEndpointFactory)
class Endpoints:
    """Endpoints for a twisted.web ``Agent``: TCP for ``http``, TLS over TCP for ``https``.

    ``Agent.usingEndpointFactory(reactor, Endpoints(reactor), pool=pool)``. Connections go
    through ``reactor`` (which may be a wrapper that refuses addresses), with
    ``connect_timeout`` seconds to connect; ``trust_root`` replaces the system's CAs.
    """

    def __init__(self, reactor: Any, connect_timeout: float = 30.0, trust_root: Any = None) -> None:
        self._reactor = reactor
        self._timeout = connect_timeout
        self._trust_root = trust_root

    def endpointForURI(self, uri: Any) -> Any:
        """The endpoint for ``uri`` (a twisted.web ``URI``)."""
        from twisted.internet.endpoints import HostnameEndpoint

        if uri.scheme not in (b"http", b"https"):
            raise SchemeNotSupported(f"unsupported scheme: {uri.scheme!r}")
        endpoint = HostnameEndpoint(self._reactor, uri.host, uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            return tls_endpoint(endpoint, client_creator(uri.host.decode("ascii"), self._trust_root))
        return endpoint


def agent(reactor: Any, pool: Any = None, connect_timeout: float = 30.0, trust_root: Any = None) -> Any:
    """A twisted.web ``Agent`` whose connections come from ``Endpoints`` (TLS imported on first https use)."""
    from twisted.web.client import Agent

    return cast(Any, Agent).usingEndpointFactory(reactor, Endpoints(reactor, connect_timeout, trust_root), pool=pool)
