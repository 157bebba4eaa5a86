"""``/onvif`` on onvif.port in per_camera mode: a SOAP Fault naming each camera's device URL."""

from __future__ import annotations

from typing import Any

from lxml import etree
from treq.testing import StubTreq
from twisted.web.resource import Resource

from atomrelay.onvif.elsewhere import DeviceAddress, DevicesElsewhere
from atomrelay.xml import ns

DEVICES = [DeviceAddress("porch", 8101, None), DeviceAddress("garage", 8103, "192.168.1.53"),
           DeviceAddress("lab", 8104, "fd00::5")]


def post(headers: dict[str, Any]) -> tuple[int, bytes]:
    """POST to the resource through a real twisted.web request; the status and body of the answer."""
    root = Resource()
    root.putChild(b"onvif", DevicesElsewhere(DEVICES))
    stub = StubTreq(root)
    results: list[Any] = []
    stub.post("http://relay.test:8080/onvif/media_service", b"<anything/>", headers=headers).addCallback(
        lambda response: stub.content(response).addCallback(lambda body: results.append((response.code, body))))
    stub.flush()
    return results[0]


def test_fault_names_each_device_url_on_the_host_asked_for_or_its_own_address() -> None:
    """A SOAP 1.1 POST gets a SOAP 1.1 Receiver fault naming every device URL (own addresses bracketed for IPv6)."""
    status, body = post({"Content-Type": "text/xml; charset=utf-8"})
    root = etree.fromstring(body)
    assert status == 500 and root.tag == ns.q(ns.SOAP11, "Envelope")
    reason = "".join(root.itertext())
    assert root.findtext(".//faultcode") == "SOAP-ENV:Server"
    for expected in ("porch at http://relay.test:8101/onvif/device_service",
                     "garage at http://192.168.1.53:8103/onvif/device_service",
                     "lab at http://[fd00::5]:8104/onvif/device_service"):
        assert expected in reason


def test_an_odd_host_header_is_not_echoed() -> None:
    """A Host header that is not a plain host name or address is replaced by the local address."""
    status, body = post({"Content-Type": "application/soap+xml", "Host": "evil\"<x>:8080"})
    assert status == 500 and b"evil" not in body
    assert b"porch at http://127.0.0.1:8101/onvif/device_service" in body
