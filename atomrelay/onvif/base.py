"""The contract between the SOAP layer and the services.

A service is a namespace plus a table of operations. The SOAP layer parses and
authenticates the request, checks the caller's role against the operation's access
class, calls the handler with a RequestContext and wraps the returned element (the
``...Response`` body child) in an envelope of the request's SOAP version. Handlers raise
SoapFault for every expected failure.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Hashable, Union

from lxml.etree import _Element


class AccessClass(enum.Enum):
    """The Core spec's access classes (section "Access classes for service requests")."""

    PRE_AUTH = "PRE_AUTH"
    READ_SYSTEM = "READ_SYSTEM"
    READ_SYSTEM_SENSITIVE = "READ_SYSTEM_SENSITIVE"
    READ_SYSTEM_SECRET = "READ_SYSTEM_SECRET"
    WRITE_SYSTEM = "WRITE_SYSTEM"
    UNRECOVERABLE = "UNRECOVERABLE"
    READ_MEDIA = "READ_MEDIA"
    ACTUATE = "ACTUATE"


# The Core spec's "Default Access Policy Definition" table: which user levels may do what.
_POLICY: dict[AccessClass, frozenset[str]] = {
    AccessClass.PRE_AUTH: frozenset({"Administrator", "Operator", "User", "Anonymous"}),
    AccessClass.READ_SYSTEM: frozenset({"Administrator", "Operator", "User"}),
    AccessClass.READ_SYSTEM_SENSITIVE: frozenset({"Administrator", "Operator"}),
    AccessClass.READ_SYSTEM_SECRET: frozenset({"Administrator"}),
    AccessClass.WRITE_SYSTEM: frozenset({"Administrator"}),
    AccessClass.UNRECOVERABLE: frozenset({"Administrator"}),
    AccessClass.READ_MEDIA: frozenset({"Administrator", "Operator", "User"}),
    AccessClass.ACTUATE: frozenset({"Administrator", "Operator"}),
}


def allowed(level: str, access: AccessClass) -> bool:
    """Whether a user level (or "Anonymous") may call an operation of this class."""
    return level in _POLICY[access]


def levels_allowed(access: AccessClass) -> frozenset[str]:
    """The user levels (and "Anonymous") that may call an operation of this class."""
    return _POLICY[access]


@dataclass(frozen=True)
class SoapFault(Exception):
    """An ONVIF fault: SOAP code (Sender/Receiver), ter: subcodes, a reason text.

    ``subcodes`` are local names in the ``ter`` namespace, outermost first, e.g.
    ``("InvalidArgVal", "NoProfile")``. ``http_status`` overrides the default
    (400 for Sender, 500 for Receiver).
    """

    code: str
    subcodes: tuple[str, ...]
    reason: str
    http_status: int | None = None

    def __str__(self) -> str:
        return f"{self.code}/{'/'.join(self.subcodes)}: {self.reason}"


def sender_fault(*subcodes: str, reason: str) -> SoapFault:
    """A Sender fault (the client's mistake), e.g. sender_fault("InvalidArgVal", "NoProfile", reason=...)."""
    return SoapFault("Sender", tuple(subcodes), reason)


def receiver_fault(*subcodes: str, reason: str) -> SoapFault:
    """A Receiver fault (the device cannot do it), e.g. receiver_fault("Action", "MaxNVTProfiles", reason=...)."""
    return SoapFault("Receiver", tuple(subcodes), reason)


@dataclass(frozen=True)
class Caller:
    """Who made the request: a user name and level, or the anonymous caller."""

    username: str | None
    level: str  # Administrator | Operator | User | Anonymous

    @property
    def anonymous(self) -> bool:
        """True when no credentials were verified."""
        return self.username is None


ANONYMOUS = Caller(None, "Anonymous")


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
