"""The one hardened XML parser for every untrusted document the relay reads.

SOAP requests and WS-Discovery datagrams come from anyone on the network, so they are
parsed here and nowhere else. The rules, cheapest first:

* a document type declaration is refused before libxml2 sees the bytes: no DTD means
  no entity declarations, so no XXE, no billion laughs, no external parameter entities
  (libxml2 would read ``file:`` parameter entities even with ``load_dtd=False``);
* the document must be UTF-8 (the parser's encoding is fixed, a declared encoding is
  ignored), which is what makes the byte scan for ``<!DOCTYPE`` complete and is the one
  character set ONVIF requires;
* the parser never resolves entities, never touches the network, never loads or
  validates a DTD, keeps libxml2's default size limits (``huge_tree=False``) and answers
  every external load it might still attempt with nothing;
* a parsed tree deeper than ``MAX_DEPTH``, with more than ``MAX_ELEMENTS`` elements or
  with more than ``MAX_ATTRIBUTES`` attributes and namespace declarations is refused
  (a 256 KiB body holds 23,000 empty attributes: each costs a few hundred bytes of tree).

Comments and processing instructions are dropped while parsing, so callers only ever
see elements and text.
"""

from __future__ import annotations

from lxml import etree
from lxml.etree import _Element

MAX_DEPTH = 64
"""Deepest element nesting accepted (a SOAP request needs about 10)."""
MAX_ELEMENTS = 4096
"""Most elements accepted in one document (a large SOAP request has a few hundred)."""
MAX_ATTRIBUTES = 4096
"""Most attributes and namespace declarations accepted in one document, counted together
(a large SOAP request has a few hundred, a gSOAP envelope declares about 60 namespaces)."""

_DOCTYPE = b"<!DOCTYPE"


class XMLRejected(Exception):
    """An untrusted document was refused; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class MalformedXML(XMLRejected):
    """The bytes are not a well-formed UTF-8 XML document."""


class UnsafeXML(XMLRejected):
    """The document is well-formed enough but uses a feature the relay refuses (DTD, huge trees)."""


class _NothingResolver(etree.Resolver):
    """Answers any external entity or DTD load with an empty document (defence in depth)."""

    def resolve(  # type: ignore[override]  # lxml-stubs omit the context argument lxml passes
        self, system_url: str | None, public_id: str | None, context: object
    ) -> object:
        return self.resolve_string("", context, base_url=None)


def _make_parser() -> etree.XMLParser:
    parser = etree.XMLParser(
        encoding="utf-8",
        resolve_entities=False,
        no_network=True,
        huge_tree=False,
        load_dtd=False,
        dtd_validation=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )
    parser.resolvers.add(_NothingResolver())
    return parser


_PARSER = _make_parser()


def parse_untrusted(
    data: bytes, max_depth: int = MAX_DEPTH, max_elements: int = MAX_ELEMENTS, max_attributes: int = MAX_ATTRIBUTES
) -> _Element:
    """Parse an untrusted UTF-8 XML document and return its root element.

    Raises ``UnsafeXML`` for a DOCTYPE or a tree over the limits and ``MalformedXML``
    for anything that is not well-formed; the exception's ``reason`` is safe to show
    to the sender.
    """
    if _DOCTYPE in data:
        raise UnsafeXML("a document type declaration (DOCTYPE) is not allowed")
    try:
        root = etree.fromstring(data, _PARSER)
    except etree.XMLSyntaxError as exc:
        raise MalformedXML("the document is empty" if not data.strip() else _syntax_reason(exc)) from None
    # Every element has a start tag and every attribute or namespace declaration an "=",
    # so no document has more elements (or levels) than "<" bytes, nor more attributes
    # than "=" bytes (the parser reads UTF-8 only, and without a DTD no entity makes
    # elements or attributes): a small request cannot break a limit, and is not walked.
    if data.count(b"<") > min(max_depth, max_elements) or data.count(b"=") > max_attributes:
        _check_shape(root, max_depth, max_elements, max_attributes)
    return root


def first_children(element: _Element) -> dict[str, _Element]:
    """``element``'s child elements by Clark name, the first of each name.

    One pass for several lookups: ``element.find(tag)`` costs about a microsecond each.
    """
    found: dict[str, _Element] = {}
    for child in element:
        tag = child.tag
        if isinstance(tag, str) and tag not in found:
            found[tag] = child
    return found


def _syntax_reason(exc: etree.XMLSyntaxError) -> str:
    message = str(exc.msg or "not well-formed").strip()[:160]
    return "".join(char if " " <= char <= "~" else "?" for char in message)


def _check_shape(root: _Element, max_depth: int, max_elements: int, max_attributes: int) -> None:
    depth = 0
    count = 0
    attributes = 0
    for event, item in etree.iterwalk(root, events=("start", "end", "start-ns")):
        if event == "end":
            depth -= 1
            continue
        if event == "start-ns":
            attributes += 1
        else:
            depth += 1
            count += 1
            attributes += len(item.attrib)
        if depth > max_depth:
            raise UnsafeXML(f"elements are nested deeper than {max_depth} levels")
        if count > max_elements:
            raise UnsafeXML(f"the document has more than {max_elements} elements")
        if attributes > max_attributes:
            raise UnsafeXML(f"the document has more than {max_attributes} attributes and namespace declarations")
