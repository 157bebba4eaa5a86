"""Request shapes: a repeated SOAP request is answered without parsing it again.

An NVR polls the same few requests (GetProfiles, GetSystemDateAndTime...) over and over,
and one signed copy differs from the next only in its UsernameToken's three texts: the
Password digest, the Nonce and Created. The rest of the bytes, the request's *shape*,
is the same every time. Once a request has been parsed and answered the full way, its
shape is remembered with what the parse found (the envelope, the route, the token's
user and forms); a later request of the same shape needs only its three texts cut out
(a few ``bytes.find``) and checked, never lxml.

Why that is sound: ``split`` cuts a body into its shape (the bytes around the cuts) and
the cut texts, which may only hold ASCII letters, digits, ``+/=:.-_`` and white space.
Two bodies with equal shapes are therefore the same bytes except for those texts, and
``remember`` keeps a shape only when, in the body that was parsed,

* every byte is ASCII, there is no comment, CDATA section, DOCTYPE or processing
  instruction (an XML declaration at the start aside), and there are as many ``>`` as
  ``<``: so each ``<`` opens a tag, each ``>`` closes one, and text between tags is
  character data;
* each cut is the whole text of an element: right after a start tag named
  ``Password``/``Nonce``/``Created`` (any prefix) and right before its end tag;
* those three start tags are the only elements with these local names in the document,
  so they are the UsernameToken's, whose texts the parse saw.

Then any body of that shape is the same well-formed document with other character data
in those three elements, so it parses to the same envelope and token apart from the
three texts, which the fast path gives to ``Authenticator.verify_token`` exactly as the
full path does. A body without ``Password`` anywhere is its own shape (no cuts) and is
remembered only when it carries no wsse:Security header. The table is small and is
emptied when full; a shape is only remembered for answers the reply cache serves.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Generic, TypeVar

from atomrelay.xml import ns
from lxml.etree import _Element

from atomrelay.auth.security import TokenForm, username_token
from atomrelay.xml.soap import Envelope

SHAPES = 64
"""Shapes remembered per SOAP resource (the table is emptied when full)."""

Route = TypeVar("Route")
Shape = tuple[bytes, ...]
"""The bytes of a body around its cuts."""

_CUT_NAMES = (b"Password", b"Nonce", b"Created")
_CUT_TEXT = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=:.-_ \t\r\n"
"""The bytes a cut text may hold: Base64, hexadecimal and xs:dateTime texts, and white space."""
_START_TAG = re.compile(rb"<((?:[A-Za-z_][\w.-]*:)?)(Password|Nonce|Created)(?:[ \t\r\n][^<>]*)?>")
_NAMED_TAG = re.compile(rb"<(?:[A-Za-z_][\w.-]*:)?(?:Password|Nonce|Created)[ \t\r\n/>]")
_XML_DECLARATION = re.compile(rb"<\?xml[ \t\r\n][^<>?]*\?>")


def split(body: bytes) -> tuple[Shape, tuple[bytes, ...]] | None:
    """``body``'s shape and the Password, Nonce and Created texts cut out of it.

    A body without ``Password`` is all shape and no cuts; None when the three cannot be
    found in that order or a text holds other characters than a token's.
    """
    find = body.find
    at = find(b"Password")
    if at < 0:
        return (body,), ()
    pieces = []
    texts = []
    end = 0
    for name in _CUT_NAMES:
        at = find(name, end)
        if at < 0:
            return None
        start = find(b">", at) + 1
        stop = find(b"<", start)
        if start == 0 or stop < 0:
            return None
        text = body[start:stop]
        if text.translate(None, _CUT_TEXT):
            return None
        pieces.append(body[end:start])
        texts.append(text)
        end = stop
    pieces.append(body[end:])
    return tuple(pieces), tuple(texts)


@dataclass(frozen=True)
class Known(Generic[Route]):
    """A remembered shape and what the full parse of a body of that shape found."""

    shape: Shape
    envelope: Envelope
    route: Route
    token: TokenForm | None
    """The UsernameToken's form; None for a shape without cuts (no wsse:Security header)."""

    def texts_of(self, body: bytes) -> tuple[bytes, ...] | None:
        """The cut texts of ``body`` if it has this (cut) shape, else None; as ``split`` would cut it.

        Each piece after the first begins with an end tag (``remember`` checked), so a cut
        text runs from the end of a piece to the next ``<``: comparing the pieces in place
        is all it takes, with no search for the names and no copy of the shape.
        """
        shape = self.shape
        if not body.startswith(shape[0]):
            return None
        find = body.find
        position = len(shape[0])
        texts = []
        for piece in shape[1:]:
            stop = find(b"<", position)
            if stop < 0 or not body.startswith(piece, stop):
                return None
            text = body[position:stop]
            if text.translate(None, _CUT_TEXT):
                return None
            texts.append(text)
            position = stop + len(piece)
        return tuple(texts) if position == len(body) else None


class Shapes(Generic[Route]):
    """The shapes of requests answered from the reply cache.

    Shapes with cuts are filed under where ``Password`` first occurs in them (the same in
    every body of the shape), shapes without under their bytes.
    """

    def __init__(self, size: int = SHAPES) -> None:
        self._cut: dict[int, list[Known[Route]]] = {}
        self._whole: dict[bytes, Known[Route]] = {}
        self._count = 0
        self._size = size

    def find(self, body: bytes) -> tuple[Known[Route] | None, tuple[bytes, ...]]:
        """What is known of ``body``'s shape (None if nothing), and its cut texts."""
        mark = body.find(b"Password")
        if mark < 0:
            return self._whole.get(body), ()
        for known in self._cut.get(mark, ()):
            texts = known.texts_of(body)
            if texts is not None:
                return known, texts
        return None, ()

    def remember(self, body: bytes, envelope: Envelope, route: Route) -> None:
        """Keep ``body``'s shape, parsed to ``envelope``, when it passes the checks in the module docstring."""
        if self.find(body)[0] is not None or not _plain_markup(body):
            return
        cut = split(body)
        if cut is None:
            return
        shape, texts = cut
        security = envelope.header_block(ns.WSSE, "Security")
        if not texts:
            if security is not None:
                return
            token = None
        else:
            token = _token_form(body, shape, texts, security)
            if token is None:
                return
        if self._count >= self._size:
            self._cut.clear()
            self._whole.clear()
            self._count = 0
        known = Known(shape, envelope, route, token)
        if texts:
            self._cut.setdefault(body.find(b"Password"), []).append(known)
        else:
            self._whole[body] = known
        self._count += 1

    def __len__(self) -> int:
        return self._count


def _plain_markup(body: bytes) -> bool:
    """ASCII; every ``<`` opens a tag and every ``>`` closes one; no comment, CDATA, DOCTYPE or PI."""
    if not body.isascii() or body.count(b"<") != body.count(b">") or b"<!" in body:
        return False
    declaration = _XML_DECLARATION.match(body)
    return body.find(b"<?", declaration.end() if declaration else 0) < 0


def _token_form(body: bytes, shape: Shape, texts: tuple[bytes, ...], security: _Element | None) -> TokenForm | None:
    """The UsernameToken's form if the cuts are exactly its Password, Nonce and Created texts."""
    if security is None or len(_NAMED_TAG.findall(body)) != len(_CUT_NAMES):
        return None
    token = username_token(security)
    if token is None or None in (token.password, token.nonce, token.created):
        return None
    for index, (name, text) in enumerate(zip(_CUT_NAMES, token.texts())):
        before = shape[index]
        tag = _START_TAG.match(before, before.rfind(b"<"))
        if tag is None or tag.end() != len(before) or tag.group(2) != name:
            return None
        if not shape[index + 1].startswith(b"</" + tag.group(1) + name + b">") or text != texts[index].decode():
            return None
    return token.form()
