"""Request shapes: a signed request shaped like one answered before skips the XML parse, never the checks."""

from __future__ import annotations

import base64
import hashlib
import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml.etree import _Element

from atomrelay.xml import ns
from atomrelay.auth.policy import AccessClass
from atomrelay.onvif.base import Operation, RequestContext, Service
from atomrelay.auth.security import username_token
from atomrelay.onvif.server import OnvifResource
from atomrelay.onvif.shapes import Shapes, split
from atomrelay.xml.soap import Maker, read_envelope
from atomrelay.xml.parsing import parse_untrusted
from tests.helpers import count_parses
from tests.onvif.conftest import SOAP_NOW, SoapRelay, soap_envelope, soap_iso, soap_op, soap_security
from tests.onvif.test_reply_cache import counted_relay, signed

TDS = Maker(ns.TDS, dict(ns.NSMAP))


def learned(body: bytes) -> tuple[Shapes[str], Any]:
    """A shape table that remembered ``body`` (parsed for real), and the envelope."""
    envelope = read_envelope(parse_untrusted(body))
    shapes: Shapes[str] = Shapes()
    shapes.remember(body, envelope, "route")
    return shapes, envelope


def token_texts(body: bytes) -> tuple[str, str | None, str | None]:
    """The Password, Nonce and Created texts lxml finds in ``body``."""
    security = read_envelope(parse_untrusted(body)).header_block(ns.WSSE, "Security")
    assert security is not None
    token = username_token(security)
    assert token is not None
    return token.texts()


def test_a_request_of_a_known_shape_is_found_with_its_own_token_texts() -> None:
    """Another signed GetHostname matches the learned shape and yields its texts; another operation does not."""
    shapes, envelope = learned(signed(soap_op("GetHostname")))
    again = signed(soap_op("GetHostname"))
    known, texts = shapes.find(again)
    assert known is not None and known.envelope is envelope and known.route == "route"
    assert known.token is not None and (known.token.username, known.token.digest) == ("admin", True)
    assert tuple(text.decode() for text in texts) == token_texts(again)
    assert shapes.find(signed(soap_op("GetScopes")))[0] is None
    assert shapes.find(signed(soap_op("GetHostname"), [TDS("Extra")]))[0] is None


def _with(body: bytes, old: bytes, new: bytes) -> bytes:
    assert old in body
    return body.replace(old, new, 1)


def _signed_text(tag: str, text: str) -> bytes:
    """A signed GetHostname whose operation element carries ``text`` in a child ``tag`` (an attribute-free decoy)."""
    return signed(TDS("GetHostname", TDS(tag, text)))


MISLEADING = {
    "a comment": lambda body: _with(body, b"<s:Body>", b"<s:Body><!-- x -->"),
    "CDATA": lambda body: _signed_text("Note", "x").replace(b">x<", b"><![CDATA[x]]><"),
    "a processing instruction": lambda body: _with(body, b"<s:Body>", b"<s:Body><?pi x?>"),
    "a '>' in an attribute value": lambda body: _with(body, b"<s:Body>", b'<s:Body q="a>b">'),
    "'Password' before the token": lambda body: _with(body, b"<s:Header>", b'<s:Header xmlns:p="urn:Password">'),
    "a second Nonce": lambda body: _signed_text("Nonce", "AAAA"),
    "non-ASCII text": lambda body: _signed_text("Note", "cafe").replace(b">cafe<", ">caf\u00e9<".encode()),
}


@pytest.mark.parametrize("case", sorted(MISLEADING))
def test_shapes_whose_markup_could_mislead_are_not_remembered(case: str) -> None:
    """Comments, CDATA, PIs, a '>' in an attribute, a decoy name, a second Nonce or non-ASCII: parsed every time."""
    body = MISLEADING[case](signed(soap_op("GetHostname")))
    read_envelope(parse_untrusted(body))  # well-formed: the fault would be elsewhere
    shapes, _ = learned(body)
    assert len(shapes) == 0


def test_unsigned_shapes_are_whole_bodies_and_signed_ones_need_their_token() -> None:
    """An unsigned body is remembered as its bytes; a PasswordText token without Nonce is not cut at all."""
    unsigned = soap_envelope(soap_op("GetSystemDateAndTime"))
    shapes, _ = learned(unsigned)
    assert shapes.find(unsigned)[0] is not None and shapes.find(unsigned + b" ")[0] is None
    plain = soap_envelope(soap_op("GetHostname"), [soap_security("admin", "admin-secret", None, digest=False)])
    assert split(plain) is None
    assert len(learned(plain)[0]) == 0


TEXT = st.text(alphabet=st.sampled_from("AZaz09+/=:.-_ \t\n<>&\"']\u00e9\x00;#"), max_size=40)


@settings(max_examples=300, deadline=None)
@given(password=TEXT, nonce=TEXT, created=TEXT)
def test_whatever_a_shape_matches_parses_to_that_shape_with_those_texts(
    password: str, nonce: str, created: str
) -> None:
    """Any texts put into a learned shape: found only when lxml reads the same document with exactly those texts."""
    template = signed(soap_op("GetHostname"))
    shapes, envelope = learned(template)
    cut = split(template)
    assert cut is not None
    pieces = cut[0]
    texts = [text.encode("utf-8") for text in (password, nonce, created)]
    body = pieces[0] + b"".join(text + piece for text, piece in zip(texts, pieces[1:]))
    known, found = shapes.find(body)
    if known is None:
        assert any(set(text) - set(b"AZaz09+/=:.-_ \t\n") for text in texts)
        return
    assert found == tuple(texts)
    assert read_envelope(parse_untrusted(body)).operation.tag == envelope.operation.tag
    assert token_texts(body) == (password, nonce, created)


@settings(max_examples=200, deadline=None)
@given(position=st.integers(min_value=0), value=st.integers(min_value=0, max_value=255))
def test_a_changed_byte_outside_the_texts_is_another_shape(position: int, value: int) -> None:
    """Changing any byte of the shape itself (not of the three texts) never matches the learned shape."""
    template = signed(soap_op("GetHostname"))
    shapes, _ = learned(template)
    cut = split(template)
    assert cut is not None
    shape = b"".join(cut[0])
    position %= len(shape)
    if shape[position] == value:
        return
    changed = shape[:position] + bytes([value]) + shape[position + 1:]
    offsets = [0]
    for piece in cut[0][:-1]:
        offsets.append(offsets[-1] + len(piece))
    # Put the original texts back where they were cut out of the (changed) shape.
    body = b""
    for index, text in enumerate(cut[1]):
        body += changed[offsets[index]:offsets[index + 1]] + text
    body += changed[offsets[-1]:]
    assert shapes.find(body)[0] is None


# --- through the SOAP server ---------------------------------------------------------------


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every body the SOAP server parses with lxml."""
    return count_parses(monkeypatch)


def test_a_known_shape_is_answered_from_the_cache_without_parsing(parses: list[bytes]) -> None:
    """The first signed request is parsed; later ones of its shape, each with its own token, are not."""
    relay, counted = counted_relay()
    first = relay.post(signed(soap_op("GetHostname")))
    later = [relay.post(signed(soap_op("GetHostname"))) for _ in range(3)]
    assert [reply.status for reply in later] == [200] * 3
    assert {reply.body for reply in later} == {first.body}
    assert (len(parses), counted.calls) == (1, 1)


def _signed_with(password: str = "admin-secret", created: float = SOAP_NOW, nonce: bytes | None = None) -> bytes:
    nonce = nonce or os.urandom(16)
    return soap_envelope(soap_op("GetHostname"), [soap_security("admin", password, soap_iso(created), nonce=nonce)])


@pytest.mark.parametrize(
    ("case", "reason"),
    [("replayed", "replayed UsernameToken nonce"), ("wrong password", "unknown user or wrong password"),
     ("stale", "off the relay clock")],
)
def test_a_known_shape_with_a_bad_token_is_refused_and_logged(case: str, reason: str, soap_log: list[Any]) -> None:
    """Replay, wrong digest and stale Created are refused exactly as on a parsed request (400, logged once)."""
    relay, _ = counted_relay()
    assert relay.post(_signed_with()).status == 200
    nonce = os.urandom(16)
    if case == "replayed":
        assert relay.post(_signed_with(nonce=nonce)).status == 200
        body = _signed_with(nonce=nonce)
    elif case == "wrong password":
        body = _signed_with(password="guess")
    else:
        body = _signed_with(created=SOAP_NOW - 3600)
    assert relay.resource._shapes.find(body)[0] is not None
    reply = relay.post(body)
    assert reply.status == 400
    assert "NotAuthorized" in reply.body.decode()
    failures = [event for event in soap_log if "authentication failed" in event.get("log_format", "")]
    assert len(failures) == 1 and reason in failures[0]["reason"]


def test_when_the_answer_changes_a_known_shape_is_answered_afresh_once() -> None:
    """A new reply key for a verified request of a known shape: parsed, handled, and not taken for a replay."""
    relay, counted = counted_relay()
    relay.post(signed(soap_op("GetHostname")))
    counted.key = "two"
    reply = relay.post(signed(soap_op("GetHostname")))
    assert (reply.status, counted.calls) == (200, 2)
    assert reply.payload()[0].text == "2"


def pre_auth_relay() -> tuple[SoapRelay, list[RequestContext]]:
    """A relay whose GetSystemDateAndTime is PRE_AUTH and cached under one key; the contexts it was called with."""
    relay = SoapRelay()
    seen: list[RequestContext] = []

    def answer(ctx: RequestContext) -> _Element:
        seen.append(ctx)
        return TDS("GetSystemDateAndTimeResponse")

    service = Service(ns.TDS, "/onvif/device_service", (2, 40), {
        "GetSystemDateAndTime": Operation(answer, AccessClass.PRE_AUTH, reply_key=lambda ctx: "now"),
    })
    relay.resource = OnvifResource([service], relay.authenticator, None)
    relay.root.putChild(b"onvif", relay.resource)
    return relay, seen


def test_an_unsigned_known_shape_skips_the_parse_and_http_credentials_do_not(parses: list[bytes]) -> None:
    """Byte-identical unsigned requests are parsed once; one with an Authorization header goes the full way."""
    relay, seen = pre_auth_relay()
    body = soap_envelope(soap_op("GetSystemDateAndTime"))
    assert [relay.post(body).status for _ in range(3)] == [200] * 3
    assert (len(parses), len(seen)) == (1, 1)
    assert relay.post(body, headers={"Authorization": "Basic " + base64.b64encode(b"a:b").decode()}).status == 200
    assert len(parses) == 2


def test_the_digest_of_a_known_shape_is_checked_over_its_own_texts() -> None:
    """A token whose digest was computed for other Created text is refused although the shape is known."""
    relay, _ = counted_relay()
    relay.post(signed(soap_op("GetHostname")))
    nonce = os.urandom(16)
    created = soap_iso(SOAP_NOW)
    other = soap_iso(SOAP_NOW + 1)
    digest = base64.b64encode(hashlib.sha1(nonce + other.encode() + b"admin-secret").digest()).decode()
    body = _signed_with(nonce=nonce)
    honest = soap_security("admin", "admin-secret", created, nonce=nonce)
    honest_digest = honest.findtext(f".//{{{ns.WSSE}}}Password")
    assert honest_digest is not None
    body = body.replace(honest_digest.encode(), digest.encode())
    assert relay.resource._shapes.find(body)[0] is not None
    assert relay.post(body).status == 400
