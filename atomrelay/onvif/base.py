"""The contract between the SOAP layer and the services.

A service is a namespace plus a table of operations. The SOAP layer parses and
authenticates the request, checks the caller's role against the operation's access
class, calls the handler with a RequestContext and wraps the returned element (the
``...Response`` body child) in an envelope of the request's SOAP version. Handlers raise
SoapFault for every expected failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Awaitable, Callable, Hashable, Union

from lxml.etree import _Element

from atomrelay.auth.policy import AccessClass, Caller

DEVICE_SERVICE_PATH = "/onvif/device_service"
"""Where every ONVIF device answers its Device service (WS-Discovery's XAddrs point here)."""


@dataclass(slots=True)
class RequestContext:
    """Everything a handler may know about the request it answers (read it, never change it).

    Not frozen: a frozen dataclass sets each field through ``object.__setattr__``, which
    made building one per request cost three times as much.
    """

    body: _Element
    """The operation element: the first child of the SOAP Body."""
    caller: Caller
    host: str
    """Host (and port) to put into XAddrs and URIs: advertise_host or the Host header."""
    service_path: str
    """The URL path the request was posted to, e.g. ``/onvif/media_service``."""
    remote: str = ""
    """Peer address, for logs."""
    device_id: str = ""
    """Which virtual device answers (empty in aggregate mode)."""


HandlerResult = Union[_Element, Awaitable[_Element]]
Handler = Callable[[RequestContext], HandlerResult]


@dataclass(frozen=True)
class Operation:
    """One SOAP operation: its handler and its Core-spec access class."""

    handler: Handler
    access: AccessClass
    reply_key: Callable[[RequestContext], Hashable] | None = None
    """For answers that many requests share: a key equal for two requests exactly when
    their answers are (it must change with the state the answer shows). The SOAP server
    then serializes the answer once per key and SOAP version; a request carrying a
    WS-Addressing MessageID is always answered afresh."""


@dataclass(frozen=True)
class Service:
    """A served ONVIF service: its namespace, its URL path and its operations."""

    namespace: str
    path: str
    """e.g. ``/onvif/device_service``."""
    version: tuple[int, int]
    """Major, minor for GetServices."""
    operations: dict[str, Operation] = field(default_factory=dict)
    capabilities: Callable[[RequestContext], _Element] | None = None
    """Builds this service's ``Capabilities`` element for GetServices(IncludeCapability)."""
    listed: Callable[[], bool] = lambda: True
    """Whether GetServices and GetCapabilities name the service now (its operations are served regardless)."""
