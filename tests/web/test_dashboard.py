"""The dashboard page at /: credentials, escaping, what each role sees, assets and the setup guides."""

from __future__ import annotations

from lxml import html

from atomrelay.web.report import Device
from tests.web.support import CONFIG, Site


def page(site: Site, user: str = "viewer") -> html.HtmlElement:
    status, headers, body = site.digest_get("/", user=user)
    assert status == 200 and headers.getRawHeaders(b"content-type") == [b"text/html; charset=utf-8"]
    return html.fromstring(body)


def test_credentials_are_required() -> None:
    """Without credentials the dashboard is a 401 with Digest challenges and shows no camera."""
    status, headers, body = Site().get("/")
    assert status == 401 and b"swing" not in body
    assert any(v.startswith(b"Digest ") for v in headers.getRawHeaders(b"www-authenticate"))


def test_cards_escape_camera_names_and_reasons() -> None:
    """A camera name or reason holding markup is shown as text, never as markup."""
    site = Site()
    body = site.digest_get("/")[2].decode()
    assert "<b>Garage</b>" not in body and "HTTP <timeout>" not in body
    tree = html.fromstring(body)
    cards = tree.xpath("//article")
    names = [card.xpath(".//span[@class='name']")[0].text_content() for card in cards]
    assert names == ["swing cam", "<b>Garage</b> & co"]
    assert tree.xpath("//b[text()='Garage']") == []
    states = [card.xpath(".//span[@data-state]")[0].get("data-state") for card in cards]
    assert states == ["online", "offline"]
    assert [img.get("src") for img in tree.xpath("//img[@class='snapshot']")] == [
        "/snapshot/swing.jpg", "/snapshot/odd.jpg",
    ]


def test_text_no_page_can_hold_is_shown_as_a_question_mark() -> None:
    """A camera name, mediamtx version or problem with a control character (an escape in the config, a peer's
    reply) does not stop the page being built: the character is shown as ``?``."""
    site = Site(config_text=CONFIG.replace('name: swing cam', 'name: "swing\\x01cam"'))
    site.reconciled.version = "v1.20.1\x00"
    site.reconciled.problem = "mediamtx said \x0b no"
    tree = page(site)
    names = [span.text_content() for span in tree.xpath("//article//span[@class='name']")]
    assert names[0] == "swing?cam"
    assert "mediamtx said ? no" in tree.text_content()
    site.reconciled.problem = None
    assert "mediamtx v1.20.1? reachable" in page(site).text_content()


def test_only_administrators_see_webhook_urls() -> None:
    """The webhook URL (with its token) is on an Administrator's page and nowhere on a User's."""
    site = Site()
    assert b"swing-token-0123456789" in site.digest_get("/", user="admin")[2]
    assert b"swing-token" not in Site().digest_get("/")[2]


def test_streams_show_mediamtx_state_and_player_links() -> None:
    """Each stream shows its RTSP URI to copy, mediamtx's ready/readers and the WebRTC and HLS player links."""
    tree = page(Site())
    swing = tree.xpath("//article")[0]
    assert "ready · 3 readers" in swing.text_content()
    assert [i.get("value") for i in swing.xpath(".//div[@class='stream']//input")] == ["rtsp://relay.test:8554/swing/main"]
    assert [a.get("href") for a in swing.xpath(".//p[@class='links']/a")] == [
        "http://relay.test:8889/swing/main/", "http://relay.test:8888/swing/main/",
    ]


def test_page_uses_only_its_own_assets() -> None:
    """The page loads its script and stylesheet from /assets/ (no CDN, no inline script) under a strict CSP."""
    site = Site()
    status, headers, body = site.digest_get("/")
    tree = html.fromstring(body)
    sources = [e.get("src") or e.get("href") for e in tree.xpath("//script | //link")]
    assert sources == ["/assets/favicon.svg", "/assets/dashboard.css", "/assets/dashboard.js"]
    assert all(script.get("src") for script in tree.xpath("//script"))
    csp = headers.getRawHeaders(b"content-security-policy")[0]
    assert b"default-src 'none'" in csp and b"script-src 'self'" in csp
    for path, kind in (("/assets/dashboard.js", b"text/javascript"), ("/assets/dashboard.css", b"text/css"),
                       ("/assets/favicon.svg", b"image/svg+xml")):
        status, headers, body = site.get(path)
        assert status == 200 and headers.getRawHeaders(b"content-type")[0].startswith(kind) and body


def test_setup_guides_use_this_relays_addresses() -> None:
    """The "how to add" guides give this relay's host and port, and Frigate's profile per camera."""
    setup = page(Site()).xpath("//section[@class='setup']")[0].text_content()
    assert "relay.test" in setup and "8080" in setup
    for name in ("Home Assistant", "Frigate", "Blue Iris", "Synology", "UniFi Protect"):
        assert name in setup
    assert "profile: swing.main" in setup and "path: rtsp://relay.test:8554/odd/main" in setup


def test_per_camera_mode_lists_each_device() -> None:
    """In per_camera mode each camera's card and the guides name that camera's own ONVIF port."""
    text = CONFIG.replace("  port: 8080\n", "  port: 8080\n  mode: per_camera\n").replace(
        "    webhook_token:", "    onvif_port: 8101\n    webhook_token:").replace(
        "    host: 192.0.2.11\n", "    host: 192.0.2.11\n    onvif_port: 8102\n")
    tree = page(Site(config_text=text, devices=[Device("swing", 8101, None), Device("odd", 8102, None)]))
    onvif = [card.xpath(".//dd/div[@class='copyable']/input")[0].get("value") for card in tree.xpath("//article")]
    assert onvif == ["http://relay.test:8101/onvif/device_service", "http://relay.test:8102/onvif/device_service"]
    assert "ports 8101, 8102" in tree.xpath("//section[@class='setup']")[0].text_content()
