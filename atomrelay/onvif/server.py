"""The twisted.web side of the SOAP server: one resource for every ``/onvif/...`` path.

Dispatch is by the Body's first element (namespace + local name) over the operation
tables of ALL services, whatever ``/onvif/<service>`` path was posted to (go2rtc and
UniFi post to other services' addresses). Status codes, per ONVIF Core 5.11/5.12:

=========================================================  ============================
request                                                    answer
=========================================================  ============================
not POST                                                   405 (twisted.web)
Content-Type not application/soap+xml, text/xml,            415, text/plain, no SOAP
application/xml (or missing)                               fault (Core "HTTP errors")
body over 256 KiB                                          413, text/plain; refused from
                                                           Content-Length or while
                                                           reading with BoundedRequest
not well-formed, DOCTYPE/entities, over the XML limits     400 Sender ter:WellFormed
root is not a SOAP 1.2/1.1 Envelope                        500 VersionMismatch (SOAP 1.2)
no Body / empty Body                                       400 Sender ter:Tag
empty request body, no HTTP credentials (curl --digest)    401 + Digest challenges + Sender
                                                           ter:NotAuthorized
operation of a served namespace without a handler          500 Receiver ter:ActionNotSupported
operation of an unknown namespace                          400 Sender ter:ActionNotSupported
protected operation, no credentials (or bad HTTP ones)     401 + Digest MD5/SHA-256 (+Basic)
                                                           challenges + Sender ter:NotAuthorized
bad WS-Security UsernameToken                              400 Sender ter:NotAuthorized
user level below the operation's access class              400 Sender ter:NotAuthorized
handler raises SoapFault                                   that fault (soap.fault_status)
handler raises anything else                               500 Receiver ter:Action, traceback
                                                           only in the log
=========================================================  ============================

SOAP 1.1 faults other than the ones with a fixed status above are HTTP 500 (SOAP 1.1
HTTP binding). PRE_AUTH operations never fail on credentials: valid ones make the
caller known to the handler, bad ones are logged and the caller is Anonymous. Header
blocks marked ``mustUnderstand`` are accepted whether understood or not (interop over
pedantry: no client sends one the relay cannot honour by ignoring it).
"""

from __future__ import annotations

import inspect
import io
from dataclasses import dataclass
from typing import IO, Any, Awaitable, Hashable, Protocol, Sequence

from lxml import etree
from lxml.etree import _Element
from twisted.internet.defer import CancelledError, Deferred
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from atomrelay.auth.policy import ANONYMOUS, AccessClass, Caller, levels_allowed
from atomrelay.auth.security import AuthenticationFailed, Authenticator, HttpRequest, remote_address
from atomrelay.metrics import Registry
from atomrelay.onvif.base import Operation, RequestContext, Service
from atomrelay.onvif.hosts import advertised, join_host, local_address, parse_host
from atomrelay.state import ChangeRetired
from atomrelay.web.limits import MAX_BODY, PLAIN_TEXT, TOO_LARGE
from atomrelay.xml import ns
from atomrelay.xml.parsing import XMLRejected, parse_untrusted
from atomrelay.xml.soap import (
    SOAP_11,
    SOAP_12,
    Envelope,
    SoapFault,
    SoapVersion,
    fault_envelope,
    fault_status,
    read_envelope,
    receiver_fault,
    response_envelope,
    sender_fault,
    version_of,
)

REPLY_CACHE_BYTES = 4 * 1024 * 1024
"""Bytes of serialized answers kept for operations with a ``reply_key`` (the cache is emptied when full);
an answer over a quarter of it is not kept."""
HOSTS_KEPT = 64
"""Distinct Host header values whose XAddr host is remembered (the table is emptied when full)."""
MAX_HOST = 300
"""Bytes of a Host header value used for XAddrs (a DNS name has at most 253); a longer one is ignored."""

_SOAP_MEDIA_TYPES = frozenset({"application/soap+xml", "text/xml", "application/xml"})
_UNSUPPORTED_MEDIA = (
    b"Unsupported media type: send SOAP 1.2 as application/soap+xml or SOAP 1.1 as text/xml.\n"
)
_WSSE_SECURITY = ns.q(ns.WSSE, "Security")
_NOT_AUTHORIZED = "Sender not authorized"
_CHALLENGE_FAULT = SoapFault("Sender", ("NotAuthorized",), _NOT_AUTHORIZED, http_status=401)
_ACTION_FAILED = receiver_fault("Action", reason="Action Failed: the device could not complete the request")


class Request(HttpRequest, Protocol):
    """The part of twisted.web's Request the SOAP server uses (typed for mypy)."""

    content: IO[bytes]

    def setHeader(self, name: bytes, value: bytes) -> None: ...

    def getHost(self) -> object: ...

    def notifyFinish(self) -> Deferred[None]: ...

    def write(self, data: bytes) -> None: ...

    def finish(self) -> None: ...


class _Replies:
    """Serialized answers by reply key, at most ``max_bytes`` of them (emptied when full)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._bodies: dict[Hashable, bytes] = {}

    def get(self, key: Hashable) -> bytes | None:
        """The answer kept under ``key``, if any."""
        return self._bodies.get(key)

    def put(self, key: Hashable, body: bytes) -> None:
        """Keep ``body`` under ``key``, unless it is over a quarter of the cache."""
        if len(body) > self.max_bytes // 4:
            return
        if self.size + len(body) > self.max_bytes:
            self._bodies.clear()
            self.size = 0
        self.size += len(body) - len(self._bodies.get(key, b""))
        self._bodies[key] = body


@dataclass(frozen=True)
class _Route:
    operation: Operation
    tag: str
    """The operation's Clark name."""
    name: str
    levels: frozenset[str]
    """The user levels allowed to call it (``base.allowed``)."""


class _Challenge(Exception):
    """The operation needs credentials the request did not (validly) give over HTTP."""

    def __init__(self, stale: bool) -> None:
        super().__init__("authentication required")
        self.stale = stale


class _Endpoint(Resource):
    """One ``/onvif/<service>`` path; every endpoint serves every operation."""

    isLeaf = True

    def __init__(self, owner: OnvifResource) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._owner = owner

    def render(self, request: Any) -> bytes | int:
        """A POST is a SOAP request; any other method gets twisted.web's answer (405 with Allow: POST)."""
        if request.method == b"POST":
            return self._owner.render_soap(request)
        result: bytes | int = super().render(request)  # type: ignore[no-untyped-call]
        return result

    def render_POST(self, request: Request) -> bytes | int:
        """Answer a SOAP request (``render`` calls ``render_soap`` itself; this names POST as allowed)."""
        return self._owner.render_soap(request)


class OnvifResource(Resource):
    """The ``/onvif`` resource: serves the given services' SOAP operations on their paths.

    Mount it as the ``onvif`` child of the site root; each ``Service.path`` must be
    ``/onvif/<name>`` (deeper paths below a known name are served too, e.g. event
    subscription addresses, and reach handlers as ``RequestContext.service_path``).
    Operation table keys are local names in the service's namespace, or Clark names
    (``{namespace}Name``) for operations in another namespace (e.g. ``wsnt:Renew``).
    The answer of an operation with a ``reply_key`` is serialized once per key and SOAP
    version and sent again as bytes (after the caller is authorized, as always).
    """

    log = Logger()

    def __init__(
        self,
        services: Sequence[Service],
        authenticator: Authenticator,
        advertise_host: str | None,
        device_id: str = "",
        max_body: int = MAX_BODY,
        metrics: Registry | None = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.authenticator = authenticator
        self._requests = (metrics or Registry()).counter(
            "atomrelay_soap_requests_total", "SOAP requests answered, by service, operation and outcome",
            ("service", "operation", "outcome"),
        )
        self.device_id = device_id
        self.max_body = max_body
        self._advertise = advertised(advertise_host) if advertise_host else None
        self._routes: dict[str, _Route] = {}
        self._endpoints: dict[bytes, _Endpoint] = {}
        self._namespaces: set[str] = set()
        self._missing: Resource = pages.errorPage(404, "No Such Service", "No ONVIF service lives at this path.")
        self._replies = _Replies(REPLY_CACHE_BYTES)
        self._hosts: dict[bytes, str] = {}
        """Host header values and the host[:port] each stands for (when the local address plays no part)."""
        for service in services:
            self._add(service)
        self._services = {b"/onvif/" + name: name.decode("ascii") for name in self._endpoints}
        """The ``service`` label of each endpoint's exact path."""

    def _add(self, service: Service) -> None:
        parts = service.path.split("/")
        if len(parts) < 3 or parts[0] or parts[1] != "onvif" or not parts[2]:
            raise ValueError(f"service path {service.path!r} is not /onvif/<name>")
        self._endpoints.setdefault(parts[2].encode("utf-8"), _Endpoint(self))
        self._namespaces.add(service.namespace)
        for key, operation in service.operations.items():
            tag = key if key.startswith("{") else ns.q(service.namespace, key)
            if tag in self._routes:
                raise ValueError(f"operation {tag} is served by two services")
            self._namespaces.add(tag[1 : tag.index("}")])
            self._routes[tag] = _Route(operation, tag, tag[tag.index("}") + 1 :], levels_allowed(operation.access))

    def getChild(self, path: bytes, request: Request) -> Resource:
        """The endpoint for ``/onvif/<path>`` if a service lives there, else a 404 page."""
        return self._endpoints.get(path) or self._missing

    # The resource has no static children: straight to getChild, once per request.
    getChildWithDefault = getChild

    def routes(self, prefix: bytes) -> dict[bytes, Resource]:
        """The endpoints by their exact path, this resource being mounted at ``prefix`` (e.g. ``b"/onvif/"``)."""
        return {prefix + name: endpoint for name, endpoint in self._endpoints.items()}

    def render(self, request: Request) -> bytes:
        """``/onvif`` itself is no service: 404."""
        return _plain(request, 404, b"No ONVIF service lives at this path.\n")

    # --- request handling --------------------------------------------------------------

    def render_soap(self, request: Request) -> bytes | int:
        """Answer one SOAP POST; even a bug in this layer is answered as a Receiver ter:Action fault."""
        try:
            return self._process(request)
        except Exception:
            self.log.failure("SOAP request from {remote} crashed the server", remote=remote_address(request))
            return _fault(request, SOAP_12, _ACTION_FAILED)

    def _process(self, request: Request) -> bytes | int:
        """Check, parse, dispatch, authorize, run the handler."""
        media_type = _media_type(request.getHeader(b"content-type"))
        if media_type not in _SOAP_MEDIA_TYPES:
            return _plain(request, 415, _UNSUPPORTED_MEDIA)
        data = self._read_body(request)
        if data is None:
            return _plain(request, 413, TOO_LARGE)
        remote = remote_address(request)
        if not data and request.getHeader(b"authorization") is None:
            # curl --digest (and libcurl) send the first POST without its body and wait for the challenge.
            self.authenticator.challenge(request, stale=False)
            return _fault(request, SOAP_11 if media_type == "text/xml" else SOAP_12, _CHALLENGE_FAULT)
        guess = SOAP_11 if media_type == "text/xml" else SOAP_12
        try:
            root = parse_untrusted(data)
        except XMLRejected as exc:
            self.log.info("malformed SOAP request from {remote}: {reason}", remote=remote, reason=exc.reason)
            self._seen(request, "unknown", "WellFormed")
            return _fault(request, guess, sender_fault("WellFormed", reason=f"Well-formed Error: {exc.reason}"))
        try:
            envelope = read_envelope(root)
        except SoapFault as fault:
            self._seen(request, "unknown", fault)
            return _fault(request, version_of(root) or SOAP_12, fault)
        route = self._routes.get(envelope.operation.tag)
        if route is None:
            self._seen(request, "unknown", "ActionNotSupported")
            return _fault(request, envelope.version, self._unsupported(envelope.operation, remote), envelope)
        try:
            caller = self._authorize(request, envelope, route, remote)
        except _Challenge as challenge:
            self.authenticator.challenge(request, stale=challenge.stale)
            self._seen(request, route.name, _CHALLENGE_FAULT)
            return _fault(request, envelope.version, _CHALLENGE_FAULT, envelope)
        except SoapFault as fault:
            self._seen(request, route.name, fault)
            return _fault(request, envelope.version, fault, envelope)
        context = self._context(request, envelope, caller, remote)
        try:
            reply_key, cached = self._cached(route, envelope, context)
            if cached is not None:
                self._seen(request, route.name, "ok")
                return _reply(request, 200, envelope.version.content_type, cached)
            result = route.operation.handler(context)
            if not etree.iselement(result) and inspect.isawaitable(result):
                return self._answer_later(request, envelope, route, remote, result)
            body = response_envelope(envelope.version, _checked(result), envelope)
            if reply_key is not None:
                self._replies.put(reply_key, body)
            self._seen(request, route.name, "ok")
            return _reply(request, 200, envelope.version.content_type, body)
        except SoapFault as fault:
            self._seen(request, route.name, fault)
            return _fault(request, envelope.version, fault, envelope)
        except Exception:
            self._log_crash(route, remote)
            self._seen(request, route.name, _ACTION_FAILED)
            return _fault(request, envelope.version, _ACTION_FAILED, envelope)

    def _context(self, request: Request, envelope: Envelope, caller: Caller, remote: str) -> RequestContext:
        return RequestContext(
            body=envelope.operation,
            caller=caller,
            host=self._host(request),
            service_path=request.path.decode("utf-8", "replace"),
            remote=remote,
            device_id=self.device_id,
        )

    def _cached(
        self, route: _Route, envelope: Envelope, context: RequestContext
    ) -> tuple[Hashable | None, bytes | None]:
        """The request's reply cache key (None: not cached) and the answer the cache holds under it."""
        key_of = route.operation.reply_key
        if key_of is None or envelope.message_id is not None:
            return None, None
        reply_key = (route.tag, envelope.version.label, key_of(context))
        return reply_key, self._replies.get(reply_key)

    def _read_body(self, request: Request) -> bytes | None:
        # BoundedRequest refuses a longer body before it is buffered; other requests have
        # buffered it already, and reading one byte past the limit tells.
        content = request.content
        if isinstance(content, io.BytesIO):
            data = content.getvalue()
        else:
            content.seek(0)
            data = content.read(self.max_body + 1)
        return data if len(data) <= self.max_body else None

    def _unsupported(self, operation: _Element, remote: str) -> SoapFault:
        name = etree.QName(operation)
        self.log.debug("unsupported operation {operation} from {remote}", operation=name.text, remote=remote)
        reason = f"Optional Action Not Implemented: {name.localname} is not implemented by this device"
        if name.namespace in self._namespaces:
            return receiver_fault("ActionNotSupported", reason=reason)
        return sender_fault("ActionNotSupported", reason=reason)

    def _authorize(self, request: Request, envelope: Envelope, route: _Route, remote: str) -> Caller:
        """The verified caller, per Core 5.12.1: HTTP credentials first, then WS-Security."""
        caller = self._authenticate(request, envelope, route, remote)
        if caller is None:
            if route.operation.access is AccessClass.PRE_AUTH:
                return ANONYMOUS
            raise _Challenge(stale=False)
        if caller.level not in route.levels:
            self.log.info(
                "user {username} ({user_level}) from {remote} may not call {operation} ({access})",
                username=caller.username,
                user_level=caller.level,
                remote=remote,
                operation=route.name,
                access=route.operation.access.value,
            )
            raise SoapFault(
                "Sender",
                ("NotAuthorized",),
                f"{_NOT_AUTHORIZED}: the {caller.level} user level may not call {route.name}",
                http_status=400,
            )
        return caller

    def _authenticate(self, request: Request, envelope: Envelope, route: _Route, remote: str) -> Caller | None:
        """The caller the request's credentials prove, or None when it gave none (or bad ones to a PRE_AUTH call)."""
        pre_auth = route.operation.access is AccessClass.PRE_AUTH
        http = self.authenticator.check_http(request)
        if http.presented and http.caller is None and not pre_auth:
            raise _Challenge(http.stale)
        caller = http.caller
        security = envelope.header_blocks.get(_WSSE_SECURITY)
        if security is not None:
            try:
                caller = self.authenticator.verify_security_header(security, remote) or caller
            except AuthenticationFailed as failure:
                if not pre_auth:
                    reason = f"{_NOT_AUTHORIZED}: {failure.hint}" if failure.hint else _NOT_AUTHORIZED
                    raise SoapFault("Sender", ("NotAuthorized",), reason, http_status=400) from None
        return caller

    def _answer_later(
        self, request: Request, envelope: Envelope, route: _Route, remote: str, pending: Awaitable[_Element]
    ) -> int:
        gone: list[bool] = []

        async def answer() -> None:
            outcome: str | SoapFault = "ok"
            try:
                body = _respond(request, envelope, _checked(await pending))
            except CancelledError:
                if gone:
                    return
                self._log_crash(route, remote)
                outcome = _ACTION_FAILED
            except SoapFault as fault:
                outcome = fault
            except ChangeRetired as retired:  # a config reload retired the objects this request reached
                outcome = receiver_fault("Action", reason=str(retired))
            except Exception:
                self._log_crash(route, remote)
                outcome = _ACTION_FAILED
            if isinstance(outcome, SoapFault):
                body = _fault(request, envelope.version, outcome, envelope)
            self._seen(request, route.name, outcome)
            if not gone:
                request.setHeader(b"content-length", b"%d" % len(body))
                request.write(body)
                request.finish()

        finished = request.notifyFinish()
        done = Deferred.fromCoroutine(answer())

        def disconnected(reason: Failure) -> None:
            gone.append(True)
            done.cancel()

        finished.addErrback(disconnected)
        return NOT_DONE_YET

    def _seen(self, request: Request, operation: str, outcome: str | SoapFault) -> None:
        """Count one answered SOAP request by service (the path's endpoint), operation and outcome.

        Every label value is bounded: a served endpoint name or ``other``, a served
        operation or ``unknown``, ``ok``, ``auth_failure`` or a fault subcode the relay raises.
        """
        service = self._services.get(request.path)
        if service is None:
            parts = request.path.split(b"/", 3)
            service = parts[2].decode("ascii") if len(parts) > 2 and parts[2] in self._endpoints else "other"
        if isinstance(outcome, SoapFault):
            subcode = outcome.subcodes[0] if outcome.subcodes else outcome.code
            outcome = "auth_failure" if subcode == "NotAuthorized" else subcode
        self._requests.inc(service, operation, outcome)

    def _log_crash(self, route: _Route, remote: str) -> None:
        self.log.failure("operation {operation} from {remote} failed", operation=route.name, remote=remote)

    def _host(self, request: Request) -> str:
        """Host[:port] for XAddrs: advertise_host, else a sane Host header, else the local address."""
        header = request.getHeader(b"host") or b""
        if len(header) > MAX_HOST:
            header = b""
        known = self._hosts.get(header)
        if known is not None:
            return known
        parsed = parse_host(header.decode("latin-1").strip()) if header else None
        if parsed is None or (self._advertise is not None and self._advertise[1] is None and parsed[1] is None):
            # The answer depends on the address the request came in on.
            host, port = self._advertise or local_address(request)
            return join_host(host, port if port is not None else local_address(request)[1])
        host, port = parsed if self._advertise is None else (self._advertise[0], self._advertise[1] or parsed[1])
        if len(self._hosts) >= HOSTS_KEPT:
            self._hosts.clear()
        known = self._hosts[header] = join_host(host, port)
        return known


def _checked(result: object) -> _Element:
    if not etree.iselement(result):
        raise TypeError(f"handler returned {type(result).__name__}, not an element")
    return result


def _respond(request: Request, envelope: Envelope, payload: _Element) -> bytes:
    body = response_envelope(envelope.version, payload, envelope)
    return _reply(request, 200, envelope.version.content_type, body)


def _fault(request: Request, version: SoapVersion, fault: SoapFault, envelope: Envelope | None = None) -> bytes:
    return _reply(request, fault_status(version, fault), version.content_type, fault_envelope(version, fault, envelope))


def _plain(request: Request, status: int, text: bytes) -> bytes:
    return _reply(request, status, PLAIN_TEXT, text)


def _reply(request: Request, status: int, content_type: bytes, body: bytes) -> bytes:
    """Status and content type for ``body``; twisted.web adds its Content-Length when a render returns it."""
    if status != 200:
        request.setResponseCode(status)
    request.setHeader(b"content-type", content_type)
    return body


def _media_type(raw: bytes | None) -> str:
    """The lower-case media type of a Content-Type value."""
    return raw.split(b";", 1)[0].strip().lower().decode("latin-1") if raw else ""
