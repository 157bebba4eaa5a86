"""XSD validation of ONVIF response bodies against the official WSDL/XSD files.

One XMLSchema is compiled (once, on first use) from a generated wrapper schema that
imports every namespace a relay response can use: the types embedded in the Device,
Media (ver10), Media2, PTZ, Imaging and Events WSDLs, ``onvif.xsd`` and the SOAP 1.2,
WS-Addressing and WS-BaseNotification namespaces. Nothing is fetched: the WSDL
types are extracted in memory, and the external standards the ONVIF files import
by URL resolve to the minimal stand-ins in ``xsd_external/``. libxml2 only knows XML
Schema 1.0, so ONVIF's 1.1-style extension wildcards are narrowed while loading
(``_weaken_wildcards``); that makes validation stricter, never looser, for ONVIF elements.
"""

from __future__ import annotations

import copy
import functools
import inspect
from pathlib import Path
from typing import Any

from lxml import etree

from atomrelay.xml import ns

# Unmodified copies of ONVIF's files (tests/reference/onvif/LICENSE.md is their licence).
REFERENCE = Path(__file__).resolve().parents[1] / "reference" / "onvif"
WSDL_DIR = REFERENCE / "wsdl"
EXTERNAL_DIR = Path(__file__).resolve().parent / "xsd_external"

WSDL_TYPES_SCHEME = "wsdl-types:"

SERVICE_WSDLS: dict[str, str] = {
    ns.TDS: "ver10/device/wsdl/devicemgmt.wsdl",
    ns.TRT: "ver10/media/wsdl/media.wsdl",
    ns.TR2: "ver20/media/wsdl/media.wsdl",
    ns.TPTZ: "ver20/ptz/wsdl/ptz.wsdl",
    ns.TIMG: "ver20/imaging/wsdl/imaging.wsdl",
    ns.TEV: "ver10/events/wsdl/event.wsdl",
}

# Every URL the ONVIF files use to import an external standard, mapped to its stand-in.
EXTERNAL_LOCATIONS: dict[str, str] = {
    "https://www.w3.org/2005/05/xmlmime": "xmlmime.xsd",
    "https://www.w3.org/2003/05/soap-envelope": "soap-envelope.xsd",
    "https://www.w3.org/2004/08/xop/include": "xop.xsd",
    "http://docs.oasis-open.org/wsn/b-2.xsd": "b-2.xsd",
    "http://docs.oasis-open.org/wsn/t-1.xsd": "t-1.xsd",
    "http://www.w3.org/2005/08/addressing/ws-addr.xsd": "ws-addr.xsd",
}

EXTERNAL_NAMESPACES: dict[str, str] = {
    ns.SOAP12: "soap-envelope.xsd",
    ns.WSA: "ws-addr.xsd",
    ns.WSNT: "b-2.xsd",
    ns.WSTOP: "t-1.xsd",
}

_WSDL_TYPES = "{http://schemas.xmlsoap.org/wsdl/}types"
_PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


class _LocalResolver(etree.Resolver):
    """Serves WSDL-embedded schemas and the external stand-ins; refuses the network."""

    def resolve(self, system_url: str, public_id: str, context: Any = None) -> Any:
        if not system_url:
            return None
        if system_url.startswith(WSDL_TYPES_SCHEME):
            path = WSDL_DIR / system_url[len(WSDL_TYPES_SCHEME):]
            return self.resolve_string(_wsdl_types(path), context, base_url=str(path))
        local = Path(system_url.removeprefix("file://"))
        if local.is_relative_to(WSDL_DIR) and local.suffix == ".xsd":
            document = etree.parse(str(local), _PARSER).getroot()
            return self.resolve_string(etree.tostring(_weaken_wildcards(document)), context, base_url=str(local))
        if system_url in EXTERNAL_LOCATIONS:
            path = EXTERNAL_DIR / EXTERNAL_LOCATIONS[system_url]
            return self.resolve_string(path.read_bytes(), context, base_url=str(path))
        if system_url.startswith(("http:", "https:")):
            raise AssertionError(f"schema import of {system_url} has no local stand-in")
        return None


def _wsdl_types(path: Path) -> bytes:
    """The ``xs:schema`` inside a WSDL's ``wsdl:types`` as a standalone document.

    The schema is re-rooted with every namespace declaration in scope at its original
    position, because QName attribute values (``type="tt:..."``) may use prefixes that
    are declared only on ``wsdl:definitions``.
    """
    wsdl = etree.parse(str(path), _PARSER)
    schema = wsdl.getroot().find(f"{_WSDL_TYPES}/{{{ns.XSD}}}schema")
    assert schema is not None, f"{path} has no wsdl:types/xs:schema"
    root = etree.Element(schema.tag, attrib=dict(schema.attrib), nsmap=schema.nsmap)  # type: ignore[arg-type]
    for child in schema:
        root.append(copy.deepcopy(child))
    return etree.tostring(_weaken_wildcards(root))


def _weaken_wildcards(schema: etree._Element) -> etree._Element:
    """Make the ONVIF "first Vendor then ONVIF" wildcards deterministic for XSD 1.0.

    ONVIF writes its schemas for XML Schema 1.1, where an ``xs:any`` of ``##any`` or
    ``##targetNamespace`` next to optional elements is allowed (weak wildcards).
    libxml2 implements XSD 1.0 and rejects such content models (Unique Particle
    Attribution). A wildcard that shares its sequence with other particles is narrowed
    to ``##other``: vendor extensions still validate, and an unknown element of the
    schema's own namespace (a misspelt or misplaced ONVIF element) becomes an error,
    which is what the tests want. A wildcard that is the whole content (the untyped
    ``Capabilities`` holders) is left alone.
    """
    for wildcard in schema.iter(f"{{{ns.XSD}}}any"):
        if wildcard.get("namespace", "##any") in ("##any", "##targetNamespace") and _has_sibling_particle(wildcard):
            wildcard.set("namespace", "##other")
    return schema


def _has_sibling_particle(wildcard: etree._Element) -> bool:
    """Whether the wildcard shares its content model with another particle."""
    parent = wildcard.getparent()
    assert parent is not None
    return any(
        isinstance(child.tag, str) and child is not wildcard and child.tag != f"{{{ns.XSD}}}annotation"
        for child in parent
    )


def _wrapper() -> etree._Element:
    """A schema without target namespace that imports every namespace we validate."""
    locations = {namespace: WSDL_TYPES_SCHEME + relative for namespace, relative in SERVICE_WSDLS.items()}
    locations[ns.TT] = str(WSDL_DIR / "ver10/schema/onvif.xsd")
    locations.update((namespace, str(EXTERNAL_DIR / name)) for namespace, name in EXTERNAL_NAMESPACES.items())
    wrapper = etree.Element(ns.q(ns.XSD, "schema"), nsmap={"xs": ns.XSD})
    for namespace, location in locations.items():
        etree.SubElement(wrapper, ns.q(ns.XSD, "import"), namespace=namespace, schemaLocation=location)
    return wrapper


@functools.lru_cache(maxsize=None)
def _schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    parser.resolvers.add(_LocalResolver())
    document = etree.fromstring(etree.tostring(_wrapper()), parser, base_url=str(EXTERNAL_DIR / "wrapper.xsd"))
    return etree.XMLSchema(document.getroottree())


VALIDATED_NAMESPACES = frozenset(SERVICE_WSDLS) | {ns.TT} | frozenset(EXTERNAL_NAMESPACES)


def validate(element: etree._Element) -> None:
    """Assert that ``element`` (a response body child, or a whole envelope) is schema-valid.

    The schema is chosen by the element's namespace; an element from a namespace no
    loaded schema covers is an error, not a silent pass.
    """
    namespace = etree.QName(element).namespace
    if namespace not in VALIDATED_NAMESPACES:
        raise AssertionError(f"no schema covers the namespace of {element.tag}")
    schema = _schema()
    # Validate a standalone copy so that the element's own document position is irrelevant.
    document = etree.fromstring(etree.tostring(element))
    if not schema.validate(document):
        errors = "\n".join(
            f"  line {error.line}: {error.message}" for error in schema.error_log  # type: ignore[attr-defined]
        )
        raise AssertionError(
            f"{element.tag} is not schema-valid:\n{errors}\n"
            f"{etree.tostring(element, pretty_print=True).decode()}"
        )


def validating(service: Any) -> Any:
    """The same ONVIF ``Service``, but every element a handler returns (at once or later) is validated first
    (answers the reply cache serves again were validated when built)."""
    from dataclasses import replace

    def wrap(operation: Any) -> Any:
        def handler(ctx: Any) -> Any:
            result = operation.handler(ctx)
            if inspect.isawaitable(result):
                async def later() -> etree._Element:
                    element = await result
                    validate(element)
                    return element

                return later()
            validate(result)
            return result

        return replace(operation, handler=handler)

    return replace(service, operations={name: wrap(op) for name, op in service.operations.items()})
