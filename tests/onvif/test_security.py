"""Authentication and authorization of SOAP requests: WS-Security, HTTP Digest/Basic, access classes."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import subprocess
from datetime import datetime, timezone
from typing import Any

import httpx
import pytest
import pytest_twisted
import requests
from lxml import etree
from lxml.etree import _Element
from twisted.internet import reactor
from twisted.internet.threads import deferToThread
from twisted.logger import Logger, formatEvent
from twisted.web.server import Site
from twisted.web.test.requesthelper import DummyRequest
from zeep.wsse.username import UsernameToken

from atomrelay.auth.policy import ANONYMOUS, Caller
from atomrelay.auth.replay import ReplayMemory
from atomrelay.auth.security import AuthenticationFailed, Authenticator
from atomrelay.onvif.server import OnvifResource
from atomrelay.web.limits import BoundedRequest
from atomrelay.xml import ns
from tests.onvif.conftest import (
    SOAP_NOW,
    SOAP_SKEW,
    SOAP_USERS,
    SoapRelay,
    SoapReply,
    soap_envelope,
    soap_iso,
    soap_op,
    soap_security,
    soap_services,
)
from tests.onvif.test_reply_cache import counted_relay, signed
from tests.onvif.test_soap import assert_fault

GET_HOSTNAME = soap_envelope(soap_op("GetHostname"))
PATH = "/onvif/device_service"


def _now(relay: SoapRelay) -> str:
    return soap_iso(relay.clock.seconds())


def _signed(relay: SoapRelay, operation: str = "GetHostname", user: str = "admin", **kwargs: Any) -> bytes:
    """A request for ``operation`` with a PasswordDigest UsernameToken for ``user`` created now."""
    password = kwargs.pop("password", SOAP_USERS[user].password)
    created = kwargs.pop("created", _now(relay))
    namespace = ns.TRT if operation in ("GetProfiles", "CreateProfile") else ns.TDS
    return soap_envelope(soap_op(operation, namespace), [soap_security(user, password, created, **kwargs)])


def _assert_not_authorized(reply: SoapReply, status: int = 400) -> str:
    reason = assert_fault(reply, "Sender", ("NotAuthorized",), status)
    assert "not authorized" in reason.lower()
    return reason


# --- WS-Security UsernameToken ------------------------------------------------------------


def _zeep_signed(relay: SoapRelay, password: str, **token_args: Any) -> bytes:
    """The envelope zeep/onvif-zeep-async sends: its own UsernameToken applied to our request."""
    envelope = etree.fromstring(GET_HOSTNAME)
    token = UsernameToken("admin", password, **token_args)
    envelope, _ = token.apply(envelope, {})
    return etree.tostring(envelope)


def _clock_now(relay: SoapRelay) -> datetime:
    return datetime.fromtimestamp(relay.clock.seconds(), timezone.utc).replace(tzinfo=None)


def test_zeep_password_digest_is_accepted(soap_relay: SoapRelay) -> None:
    """zeep's PasswordDigest token (Zulu Created, as onvif-zeep-async sends it) authenticates the admin."""
    body = _zeep_signed(soap_relay, "admin-secret", use_digest=True, created=_clock_now(soap_relay), zulu_timestamp=True)
    reply = soap_relay.post(body)
    assert reply.status == 200, reply.body
    assert soap_relay.calls[-1].caller == Caller("admin", "Administrator")


def test_zeep_offset_created_is_accepted(soap_relay: SoapRelay) -> None:
    """A Created with a +00:00 offset (plain zeep) is as good as Zulu."""
    body = _zeep_signed(soap_relay, "admin-secret", use_digest=True, created=_clock_now(soap_relay))
    assert b"+00:00" in body
    assert soap_relay.post(body).status == 200


def test_zeep_password_text_is_accepted(soap_relay: SoapRelay) -> None:
    """zeep's bare PasswordText token (Frigate tls_insecure) is accepted, and a wrong one is not."""
    assert soap_relay.post(_zeep_signed(soap_relay, "admin-secret")).status == 200
    _assert_not_authorized(soap_relay.post(_zeep_signed(soap_relay, "admin-wrong")))


def test_password_text_can_be_turned_off(soap_log: list[dict[str, Any]]) -> None:
    """With allow_password_text off, a correct PasswordText token gets the wrong-password fault, logged with why."""
    relay = SoapRelay()
    relay.authenticator.allow_password_text = False
    wrong = relay.post(_zeep_signed(relay, "admin-wrong"))
    refused = relay.post(_zeep_signed(relay, "admin-secret"))
    _assert_not_authorized(refused)
    assert refused.body == wrong.body
    assert relay.post(_signed(relay)).status == 200
    reasons = [event["reason"] for event in soap_log if "authentication failed" in event.get("log_format", "")]
    assert reasons[-1] == "PasswordText token, and onvif.allow_password_text is false"


def test_created_with_a_raw_carriage_return_means_what_the_xml_parser_reads(soap_log: list[dict[str, Any]]) -> None:
    """A CR in Created is read as LF, parsed or cut from the raw bytes: a digest over the CR text fails both ways."""
    relay, _ = counted_relay()
    nonce = os.urandom(16)
    created = soap_iso(SOAP_NOW).replace("T", "\r")

    def body(digest_over: str) -> bytes:
        digest = base64.b64encode(hashlib.sha1(nonce + digest_over.encode() + b"admin-secret").digest()).decode()
        security = soap_security("admin", "admin-secret", "CREATED", nonce=nonce)
        security[0][1].text = digest
        return soap_envelope(soap_op("GetHostname"), [security]).replace(b"CREATED", created.encode())

    assert relay.post(signed(soap_op("GetHostname"))).status == 200  # a warm reply cache
    assert relay.post(body(created)).status == 400
    assert relay.post(body(created.replace("\r", "\n"))).status == 200


def _agsh_security(username: str, password: str, created: str, nonce: bytes) -> _Element:
    """npm onvif's header shape: default-namespaced Security/UsernameToken, s:mustUnderstand, wsu Created."""
    digest = base64.b64encode(hashlib.sha1(nonce + created.encode() + password.encode()).digest()).decode()
    security = etree.Element(
        ns.q(ns.WSSE, "Security"), {ns.q(ns.SOAP12, "mustUnderstand"): "1"}, nsmap={None: ns.WSSE, "s": ns.SOAP12}
    )
    token = etree.SubElement(security, ns.q(ns.WSSE, "UsernameToken"))
    etree.SubElement(token, ns.q(ns.WSSE, "Username")).text = username
    etree.SubElement(token, ns.q(ns.WSSE, "Password"), {"Type": ns.PASSWORD_DIGEST}).text = digest
    etree.SubElement(
        token,
        ns.q(ns.WSSE, "Nonce"),
        {"EncodingType": "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-soap-message-security-1.0#Base64Binary"},
    ).text = base64.b64encode(nonce).decode()
    etree.SubElement(token, ns.q(ns.WSU, "Created"), nsmap={None: ns.WSU}).text = created
    return security


def test_npm_onvif_default_namespace_security_is_accepted(soap_relay: SoapRelay) -> None:
    """The agsh/UniFi shape (no wsse: prefix, mustUnderstand, millisecond Created) authenticates."""
    created = datetime.fromtimestamp(soap_relay.clock.seconds(), timezone.utc).isoformat(timespec="milliseconds")
    created = created.replace("+00:00", "Z")
    security = _agsh_security("operator", "operator-secret", created, os.urandom(16))
    body = soap_envelope(soap_op("GetHostname"), [security])
    assert b'xmlns="http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"' in body
    reply = soap_relay.post(body)
    assert reply.status == 200, reply.body
    assert soap_relay.calls[-1].caller == Caller("operator", "Operator")


@pytest.mark.parametrize("user,password", [("admin", "wrong"), ("nobody", "admin-secret"), ("admin", "")])
def test_wrong_credentials_are_not_authorized(soap_relay: SoapRelay, user: str, password: str) -> None:
    """A bad digest or an unknown user is HTTP 400 Sender ter:NotAuthorized with no challenge (Core 5.12.1)."""
    reply = soap_relay.post(soap_envelope(soap_op("GetHostname"), [soap_security(user, password, _now(soap_relay))]))
    _assert_not_authorized(reply)
    assert reply.header("www-authenticate") == []
    assert not soap_relay.calls


@pytest.mark.parametrize(
    ("offset", "accepted"),
    [(-SOAP_SKEW + 1, True), (SOAP_SKEW - 1, True), (-SOAP_SKEW - 1, False), (SOAP_SKEW + 1, False)],
)
def test_created_must_be_within_the_clock_skew(soap_relay: SoapRelay, offset: float, accepted: bool) -> None:
    """Created more than max_clock_skew away from the relay clock is refused with a clock hint."""
    body = _signed(soap_relay, created=soap_iso(soap_relay.clock.seconds() + offset))
    reply = soap_relay.post(body)
    if accepted:
        assert reply.status == 200
    else:
        assert "clock skew" in _assert_not_authorized(reply)


def test_replayed_nonce_is_refused(soap_relay: SoapRelay) -> None:
    """The same (user, nonce) is accepted once within the window; a fresh nonce is fine again."""
    body = _signed(soap_relay, nonce=b"fixed-nonce-1234")
    assert soap_relay.post(body).status == 200
    _assert_not_authorized(soap_relay.post(body))
    soap_relay.clock.advance(10)
    _assert_not_authorized(soap_relay.post(body))
    assert soap_relay.post(_signed(soap_relay)).status == 200


def test_same_nonce_from_another_user_is_no_replay(soap_relay: SoapRelay) -> None:
    """Replays are per (user, nonce): another user's token with the same nonce is accepted, each only once."""
    assert soap_relay.post(_signed(soap_relay, user="admin", nonce=b"shared-nonce-123")).status == 200
    assert soap_relay.post(_signed(soap_relay, user="viewer", nonce=b"shared-nonce-123")).status == 200
    _assert_not_authorized(soap_relay.post(_signed(soap_relay, user="viewer", nonce=b"shared-nonce-123")))


def iso_microseconds(seconds: float) -> str:
    """An xs:dateTime with microseconds, in Zulu form."""
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _token(relay: SoapRelay, user: str = "admin") -> _Element:
    """A Security header with a PasswordDigest token for ``user`` created now (to the microsecond)."""
    return soap_security(user, SOAP_USERS[user].password, iso_microseconds(relay.clock.seconds()))


def test_replay_memory_expires_and_is_capped(soap_relay: SoapRelay) -> None:
    """Remembered tokens are forgotten once their Created leaves the window, and never exceed the cap."""
    authenticator = Authenticator(soap_relay.clock, SOAP_USERS.get, SOAP_SKEW, False, replay_cap=3)
    for _ in range(6):
        soap_relay.clock.advance(0.5)
        assert authenticator.verify_security_header(_token(soap_relay), "10.0.0.9") is not None
        assert authenticator.replay_memory_size == min(_ + 1, 3)
    soap_relay.clock.advance(SOAP_SKEW + 1)
    authenticator.verify_security_header(_token(soap_relay), "10.0.0.9")
    assert authenticator.replay_memory_size == 1


def test_a_flood_past_the_cap_does_not_reopen_a_replay(soap_relay: SoapRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    """After more fresh tokens than the memory holds, a token admitted before them is refused; a fresh one is not."""
    log: list[dict[str, Any]] = []
    monkeypatch.setattr(ReplayMemory, "log", Logger(observer=log.append))
    authenticator = Authenticator(soap_relay.clock, SOAP_USERS.get, SOAP_SKEW, False, replay_cap=100)
    administrator = _token(soap_relay)
    assert authenticator.verify_security_header(administrator, "10.0.0.9") == Caller("admin", "Administrator")
    for _ in range(150):
        soap_relay.clock.advance(0.01)
        assert authenticator.verify_security_header(_token(soap_relay, "viewer"), "10.0.0.66") is not None
    assert authenticator.replay_memory_size == 100
    with pytest.raises(AuthenticationFailed, match="full replay memory forgot"):
        authenticator.verify_security_header(administrator, "10.0.0.66")
    soap_relay.clock.advance(0.01)
    assert authenticator.verify_security_header(_token(soap_relay), "10.0.0.9") == Caller("admin", "Administrator")
    warnings = [formatEvent(event) for event in log if event["log_level"].name == "warn"]
    assert len(warnings) == 1 and "WS-Security tokens full at 100" in warnings[0]
    assert "100 a second" in warnings[0]  # 50 tokens in 0.5 s since the memory was half full


def test_one_accounts_flood_dated_ahead_does_not_hold_off_another(soap_relay: SoapRelay) -> None:
    """A User account filling the memory with tokens dated ahead locks out itself, not the Administrator."""
    clock = soap_relay.clock
    authenticator = Authenticator(clock, SOAP_USERS.get, SOAP_SKEW, False, replay_cap=100)
    for _ in range(150):
        clock.advance(0.01)
        ahead = soap_security("viewer", "viewer-secret", iso_microseconds(clock.seconds() + SOAP_SKEW - 1))
        assert authenticator.verify_security_header(ahead, "10.0.0.66") is not None
    for _ in range(3):
        clock.advance(0.01)
        token = _token(soap_relay)
        assert authenticator.verify_security_header(token, "10.0.0.9") == Caller("admin", "Administrator")
        with pytest.raises(AuthenticationFailed, match="full replay memory forgot|replayed"):
            authenticator.verify_security_header(token, "10.0.0.66")
    with pytest.raises(AuthenticationFailed, match="full replay memory forgot"):
        authenticator.verify_security_header(_token(soap_relay, "viewer"), "10.0.0.66")


def test_a_digest_flood_past_the_cap_does_not_reopen_a_replay(soap_relay: SoapRelay) -> None:
    """A Digest request whose nonce the full memory forgot is answered stale, never accepted twice."""
    relay = soap_relay
    relay.authenticator = Authenticator(relay.clock, SOAP_USERS.get, SOAP_SKEW, False, replay_cap=20)
    relay.resource = OnvifResource(soap_services(relay), relay.authenticator, None, device_id="dev1")
    relay.root.putChild(b"onvif", relay.resource)
    first = {"Authorization": _digest(_challenge(relay), "admin", "admin-secret")}
    assert relay.post(GET_HOSTNAME, headers=first).status == 200
    for _ in range(30):
        relay.clock.advance(0.1)
        flood = {"Authorization": _digest(_challenge(relay), "viewer", "viewer-secret")}
        assert relay.post(GET_HOSTNAME, headers=flood).status == 200
    assert relay.authenticator.replay_memory_size == 20
    replay = relay.post(GET_HOSTNAME, headers=first)
    _assert_not_authorized(replay, 401)
    assert all(c.get("stale") == "true" for c in _challenges(replay))
    retry = {"Authorization": _digest(_challenges(replay)[0], "admin", "admin-secret")}
    assert relay.post(GET_HOSTNAME, headers=retry).status == 200
    assert [call.caller.username for call in relay.calls].count("admin") == 2


def test_digest_without_nonce_or_created_is_refused(soap_relay: SoapRelay) -> None:
    """PasswordDigest needs both Nonce and Created (Core 5.12.3)."""
    security = soap_security("admin", "admin-secret", _now(soap_relay))
    token = security[0]
    token.remove(token.find(ns.q(ns.WSSE, "Nonce")))
    _assert_not_authorized(soap_relay.post(soap_envelope(soap_op("GetHostname"), [security])))
    security = soap_security("admin", "admin-secret", _now(soap_relay))
    security[0].remove(security[0].find(ns.q(ns.WSU, "Created")))
    _assert_not_authorized(soap_relay.post(soap_envelope(soap_op("GetHostname"), [security])))


def test_malformed_nonce_is_refused(soap_relay: SoapRelay) -> None:
    """A Nonce that is not Base64 is a failed authentication, not a crash."""
    security = soap_security("admin", "admin-secret", _now(soap_relay))
    nonce = security[0].find(ns.q(ns.WSSE, "Nonce"))
    assert nonce is not None
    nonce.text = "***not base64***"
    _assert_not_authorized(soap_relay.post(soap_envelope(soap_op("GetHostname"), [security])))


# --- missing credentials ------------------------------------------------------------------


def _challenges(reply: SoapReply) -> list[dict[str, str]]:
    result = []
    for value in reply.header("www-authenticate"):
        scheme, _, rest = value.partition(" ")
        params = {key.lower(): a or b for key, a, b in re.findall(r'(\w+)=(?:"([^"]*)"|([^\s,]+))', rest)}
        params["scheme"] = scheme
        result.append(params)
    return result


def test_missing_credentials_get_a_digest_challenge(soap_relay: SoapRelay) -> None:
    """A protected operation without credentials is 401 with MD5 and SHA-256 Digest challenges and a fault body."""
    reply = soap_relay.post(GET_HOSTNAME)
    _assert_not_authorized(reply, 401)
    challenges = _challenges(reply)
    assert [(c["scheme"], c["algorithm"]) for c in challenges] == [("Digest", "MD5"), ("Digest", "SHA-256")]
    assert all(c["qop"] == "auth" and c["realm"] == "atomrelay" and "stale" not in c for c in challenges)
    assert challenges[0]["nonce"] == challenges[1]["nonce"]
    assert not soap_relay.calls


def test_security_header_without_username_token_is_like_none(soap_relay: SoapRelay) -> None:
    """A Security header that only carries a Timestamp gives no credentials: 401 challenge."""
    security = etree.Element(ns.q(ns.WSSE, "Security"), nsmap={"wsse": ns.WSSE})
    etree.SubElement(security, ns.q(ns.WSU, "Timestamp"))
    reply = soap_relay.post(soap_envelope(soap_op("GetHostname"), [security]))
    _assert_not_authorized(reply, 401)


# --- access classes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "operation", "allowed"),
    [
        ("viewer", "GetHostname", True),
        ("viewer", "GetProfiles", True),
        ("viewer", "GetNetworkInterfaces", False),
        ("viewer", "CreateProfile", False),
        ("operator", "GetNetworkInterfaces", True),
        ("operator", "CreateProfile", True),
        ("operator", "GetSystemLog", False),
        ("operator", "SetHostname", False),
        ("operator", "SetSystemFactoryDefault", False),
        ("admin", "GetSystemLog", True),
        ("admin", "SetHostname", True),
        ("admin", "SetSystemFactoryDefault", True),
    ],
)
def test_user_levels_follow_the_default_access_policy(
    soap_relay: SoapRelay, user: str, operation: str, allowed: bool
) -> None:
    """Each level reaches its access classes and gets ter:NotAuthorized (HTTP 400) above them."""
    reply = soap_relay.post(_signed(soap_relay, operation, user))
    if allowed:
        assert reply.status == 200, reply.body
        assert soap_relay.calls[-1].caller.username == user
    else:
        reason = _assert_not_authorized(reply)
        assert SOAP_USERS[user].role in reason
        assert not soap_relay.calls


def test_pre_auth_operation_ignores_bad_credentials(soap_relay: SoapRelay) -> None:
    """PRE_AUTH operations run for anyone: bad credentials make the caller Anonymous, good ones known."""
    assert soap_relay.post(_signed(soap_relay, "GetSystemDateAndTime", password="wrong")).status == 200
    assert soap_relay.calls[-1].caller == ANONYMOUS
    assert soap_relay.post(_signed(soap_relay, "GetSystemDateAndTime", "viewer")).status == 200
    assert soap_relay.calls[-1].caller == Caller("viewer", "User")
    bogus_digest = {"Authorization": 'Digest username="admin", realm="atomrelay", nonce="00", uri="/x", '
                                     'response="00", qop=auth, nc=00000001, cnonce="c"'}
    reply = soap_relay.post(soap_envelope(soap_op("GetSystemDateAndTime")), headers=bogus_digest)
    assert reply.status == 200
    assert soap_relay.calls[-1].caller == ANONYMOUS


def test_failed_attempts_are_logged_without_password(soap_relay: SoapRelay, soap_log: list[dict[str, Any]]) -> None:
    """A failed login is logged with the peer address and user name, never the password."""
    soap_relay.post(_signed(soap_relay, password="hunter2-wrong"))
    soap_relay.post(_zeep_signed(soap_relay, "plaintext-wrong"))
    lines = soap_relay.formatted_log()
    failures = [line for line in lines if "authentication failed" in line]
    assert len(failures) == 2
    assert all("127.0.0.1" in line and "admin" in line for line in failures)
    assert not any("hunter2" in line or "plaintext-wrong" in line for line in lines)
    assert not any("hunter2" in repr(event) or "plaintext-wrong" in repr(event) for event in soap_log)


# --- HTTP Digest --------------------------------------------------------------------------


def _digest(
    challenge: dict[str, str],
    username: str,
    password: str,
    nc: int | str = 1,
    uri: str = PATH,
    cnonce: str = "0a4f113b",
    method: str = "POST",
    **override: str,
) -> str:
    """An RFC 7616 Authorization header computed independently of the relay's code."""
    algorithm = override.pop("algorithm", challenge["algorithm"])
    hash_name = {"MD5": "md5", "SHA-256": "sha256"}.get(algorithm, "md5")

    def h(text: str) -> str:
        return hashlib.new(hash_name, text.encode()).hexdigest()

    def quoted(value: str) -> str:
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'

    realm = override.pop("realm", challenge["realm"])
    nonce = override.pop("nonce", challenge["nonce"])
    count = nc if isinstance(nc, str) else f"{nc:08x}"
    response = h(f"{h(f'{username}:{realm}:{password}')}:{nonce}:{count}:{cnonce}:auth:{h(f'{method}:{uri}')}")
    fields = {
        "username": quoted(username),
        "realm": quoted(realm),
        "nonce": quoted(nonce),
        "uri": quoted(uri),
        "algorithm": algorithm,
        "response": quoted(response),
        "opaque": quoted(challenge["opaque"]),
        "qop": "auth",
        "nc": count,
        "cnonce": quoted(cnonce),
        **override,
    }
    return "Digest " + ", ".join(f"{key}={value}" for key, value in fields.items() if value)


def _challenge(relay: SoapRelay, algorithm: str = "MD5") -> dict[str, str]:
    challenges = _challenges(relay.post(GET_HOSTNAME))
    return next(c for c in challenges if c["algorithm"] == algorithm)


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256"])
def test_http_digest_authenticates(soap_relay: SoapRelay, algorithm: str) -> None:
    """Answering the 401 with an RFC 7616 Digest (MD5 or SHA-256) reaches the operation as that user."""
    challenge = _challenge(soap_relay, algorithm)
    reply = soap_relay.post(GET_HOSTNAME, headers={"Authorization": _digest(challenge, "viewer", "viewer-secret")})
    assert reply.status == 200, reply.body
    assert soap_relay.calls[-1].caller == Caller("viewer", "User")


def test_http_digest_wrong_password_is_challenged_again(soap_relay: SoapRelay) -> None:
    """A wrong Digest password is a 401 with fresh, non-stale challenges."""
    challenge = _challenge(soap_relay)
    reply = soap_relay.post(GET_HOSTNAME, headers={"Authorization": _digest(challenge, "admin", "nope")})
    _assert_not_authorized(reply, 401)
    assert all("stale" not in c for c in _challenges(reply))


def test_http_digest_expired_nonce_is_stale(soap_relay: SoapRelay) -> None:
    """A correct response to an expired nonce gets stale=true, and the retry with the new nonce works."""
    challenge = _challenge(soap_relay)
    soap_relay.clock.advance(301)
    reply = soap_relay.post(GET_HOSTNAME, headers={"Authorization": _digest(challenge, "admin", "admin-secret")})
    _assert_not_authorized(reply, 401)
    fresh = _challenges(reply)
    assert all(c.get("stale") == "true" for c in fresh)
    retry = soap_relay.post(GET_HOSTNAME, headers={"Authorization": _digest(fresh[0], "admin", "admin-secret")})
    assert retry.status == 200


def test_http_digest_foreign_nonce_is_stale(soap_relay: SoapRelay) -> None:
    """A correct response to a nonce this relay never issued (e.g. before a restart) also gets stale=true."""
    challenge = dict(_challenge(soap_relay), nonce="ab" * 32)
    reply = soap_relay.post(GET_HOSTNAME, headers={"Authorization": _digest(challenge, "admin", "admin-secret")})
    assert all(c.get("stale") == "true" for c in _challenges(reply))


def test_http_digest_nonce_count_replay_is_refused(soap_relay: SoapRelay) -> None:
    """Re-sending a request with the same nc is refused; the next nc is accepted."""
    challenge = _challenge(soap_relay)
    first = {"Authorization": _digest(challenge, "admin", "admin-secret", nc=1)}
    assert soap_relay.post(GET_HOSTNAME, headers=first).status == 200
    _assert_not_authorized(soap_relay.post(GET_HOSTNAME, headers=first), 401)
    second = {"Authorization": _digest(challenge, "admin", "admin-secret", nc=2)}
    assert soap_relay.post(GET_HOSTNAME, headers=second).status == 200


def test_another_user_cannot_spend_an_administrators_nonce_count(soap_relay: SoapRelay) -> None:
    """A User who saw an Administrator's Digest nonce on the LAN and answers it with the highest count does not
    lock the Administrator out of that nonce."""
    challenge = _challenge(soap_relay)
    sniffed = {"Authorization": _digest(challenge, "viewer", "viewer-secret", nc=0xFFFFFFFF)}
    assert soap_relay.post(GET_HOSTNAME, headers=sniffed).status == 200
    admin = {"Authorization": _digest(challenge, "admin", "admin-secret", nc=1)}
    assert soap_relay.post(GET_HOSTNAME, headers=admin).status == 200


@pytest.mark.parametrize(
    "change",
    [
        {"uri": "/onvif/other"},
        {"realm": "elsewhere"},
        {"algorithm": "SHA-512-256"},
        {"qop": ""},
        {"opaque": '"forged"'},
        {"nc": "xyz"},
    ],
    ids=["uri", "realm", "algorithm", "no-qop", "opaque", "nc"],
)
def test_http_digest_parameter_mismatches_are_refused(soap_relay: SoapRelay, change: dict[str, str]) -> None:
    """A Digest for another URI, realm or algorithm, or without qop/with a forged opaque, is a 401."""
    challenge = _challenge(soap_relay)
    header = _digest(challenge, "admin", "admin-secret", **change)
    _assert_not_authorized(soap_relay.post(GET_HOSTNAME, headers={"Authorization": header}), 401)


def test_http_digest_quoted_commas_parse(soap_relay: SoapRelay) -> None:
    """Quoted parameter values may contain commas and backslash-escaped quotes (RFC 7230 quoted-string)."""
    challenge = _challenge(soap_relay)
    header = _digest(challenge, "admin", "admin-secret", cnonce='a, b="c"')
    assert 'cnonce="a, b=\\"c\\""' in header
    assert soap_relay.post(GET_HOSTNAME, headers={"Authorization": header}).status == 200


def test_http_credentials_are_checked_before_ws_security(soap_relay: SoapRelay) -> None:
    """With both: a bad Digest is a 401 whatever the token says; a good Digest still needs a good token."""
    challenge = _challenge(soap_relay)
    bad_http = {"Authorization": _digest(challenge, "admin", "wrong")}
    _assert_not_authorized(soap_relay.post(_signed(soap_relay), headers=bad_http), 401)
    good_http = {"Authorization": _digest(challenge, "admin", "admin-secret", nc=1)}
    _assert_not_authorized(soap_relay.post(_signed(soap_relay, password="wrong"), headers=good_http), 400)
    good_http = {"Authorization": _digest(challenge, "admin", "admin-secret", nc=2)}
    assert soap_relay.post(_signed(soap_relay, user="viewer"), headers=good_http).status == 200
    assert soap_relay.calls[-1].caller.username == "viewer"


# --- HTTP Basic ---------------------------------------------------------------------------


def _basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def test_basic_is_ignored_unless_enabled(soap_relay: SoapRelay) -> None:
    """With http_basic off, Basic credentials count for nothing and no Basic challenge is offered."""
    reply = soap_relay.post(GET_HOSTNAME, headers=_basic("admin", "admin-secret"))
    _assert_not_authorized(reply, 401)
    assert [c["scheme"] for c in _challenges(reply)] == ["Digest", "Digest"]


def test_basic_works_when_enabled(soap_basic_relay: SoapRelay) -> None:
    """With http_basic on, Basic is offered last and correct credentials authenticate."""
    reply = soap_basic_relay.post(GET_HOSTNAME)
    assert [c["scheme"] for c in _challenges(reply)] == ["Digest", "Digest", "Basic"]
    assert soap_basic_relay.post(GET_HOSTNAME, headers=_basic("operator", "operator-secret")).status == 200
    assert soap_basic_relay.calls[-1].caller == Caller("operator", "Operator")
    _assert_not_authorized(soap_basic_relay.post(GET_HOSTNAME, headers=_basic("operator", "x")), 401)
    malformed = {"Authorization": "Basic %%%not-base64"}
    _assert_not_authorized(soap_basic_relay.post(GET_HOSTNAME, headers=malformed), 401)


# --- the helper for other HTTP endpoints -------------------------------------------------


def test_authenticate_http_and_challenge_for_plain_endpoints(soap_relay: SoapRelay) -> None:
    """authenticate_http returns the caller or None; challenge makes a 401 that says stale when it was."""
    authenticator = soap_relay.authenticator
    request = DummyRequest([b"snapshot"])
    request.method = b"GET"
    request.path = b"/snapshot/cam1"
    assert authenticator.authenticate_http(request) is None
    authenticator.challenge(request)
    assert request.responseCode == 401
    values = request.responseHeaders.getRawHeaders(b"www-authenticate")
    assert [v.split(b" ")[0] for v in values] == [b"Digest", b"Digest"]
    challenge = _challenges(SoapReply(401, request.responseHeaders, b""))[0]

    good = DummyRequest([b"snapshot"])
    good.method, good.path = b"GET", b"/snapshot/cam1"
    good.requestHeaders.setRawHeaders(
        b"authorization", [_digest(challenge, "viewer", "viewer-secret", uri="/snapshot/cam1", method="GET").encode()]
    )
    assert authenticator.authenticate_http(good) == Caller("viewer", "User")

    soap_relay.clock.advance(1000)
    stale = DummyRequest([b"snapshot"])
    stale.method, stale.path = b"GET", b"/snapshot/cam1"
    stale.requestHeaders.setRawHeaders(
        b"authorization",
        [_digest(challenge, "viewer", "viewer-secret", nc=2, uri="/snapshot/cam1", method="GET").encode()],
    )
    assert authenticator.authenticate_http(stale) is None
    authenticator.challenge(stale)
    assert all(b"stale=true" in v for v in stale.responseHeaders.getRawHeaders(b"www-authenticate"))


# --- independent real clients over loopback ----------------------------------------------


@pytest.fixture
def soap_port() -> Any:
    """The test relay listening on a real loopback port."""
    relay = SoapRelay(clock=reactor)
    site = Site(relay.root, requestFactory=BoundedRequest)
    port = reactor.listenTCP(0, site, interface="127.0.0.1")  # type: ignore[attr-defined]
    yield relay, port.getHost().port
    port.stopListening()


def _httpx_digest(url: str) -> tuple[int, str]:
    """httpx's DigestAuth picks the first challenge it parses: MD5."""
    with httpx.Client(timeout=10) as client:
        response = client.post(url, content=GET_HOSTNAME, headers={"Content-Type": "application/soap+xml"},
                               auth=httpx.DigestAuth("admin", "admin-secret"))
        return response.status_code, response.request.headers.get("authorization", "")


def _requests_digest(url: str) -> tuple[int, str]:
    """requests' HTTPDigestAuth merges the challenges, the last (SHA-256) wins."""
    response = requests.post(url, data=GET_HOSTNAME, headers={"Content-Type": "application/soap+xml"},
                             auth=requests.auth.HTTPDigestAuth("admin", "admin-secret"), timeout=10)
    return response.status_code, response.request.headers.get("Authorization", "")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_real_digest_clients_authenticate(soap_port: Any) -> None:
    """httpx (MD5) and requests (SHA-256) Digest implementations both get through over a real socket."""
    relay, port = soap_port
    url = f"http://127.0.0.1:{port}{PATH}"
    status, authorization = await deferToThread(_httpx_digest, url)
    assert status == 200 and "algorithm=MD5" in authorization
    status, authorization = await deferToThread(_requests_digest, url)
    assert status == 200 and "SHA-256" in authorization
    assert [call.caller.username for call in relay.calls] == ["admin", "admin"]


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_real_zeep_token_over_loopback(soap_port: Any) -> None:
    """A zeep-signed request (real clock, Zulu Created) authenticates over a real socket."""
    relay, port = soap_port
    envelope = etree.fromstring(GET_HOSTNAME)
    envelope, _ = UsernameToken("operator", "operator-secret", use_digest=True, zulu_timestamp=True).apply(envelope, {})

    def post() -> int:
        return httpx.post(f"http://127.0.0.1:{port}{PATH}", content=etree.tostring(envelope),
                          headers={"Content-Type": "application/soap+xml"}, timeout=10).status_code

    assert await deferToThread(post) == 200
    assert relay.calls[-1].caller == Caller("operator", "Operator")


def _curl_digest(url: str) -> tuple[int, bytes, str]:
    """The real ``curl --digest`` posting GetHostname: its final status, body and verbose trace."""
    curl = shutil.which("curl")
    assert curl is not None, "curl is missing: `make system-deps` installs it"
    command = [curl, "--silent", "--show-error", "--verbose", "--max-time", "10", "--digest", "-u", "admin:admin-secret",
               "-H", "Content-Type: application/soap+xml", "--data-binary", "@-", "-w", "\n%{http_code}", url]
    result = subprocess.run(command, input=GET_HOSTNAME, capture_output=True, timeout=30, check=True)
    body, _, status = result.stdout.rpartition(b"\n")
    return int(status), body, result.stderr.decode("utf-8", "replace")


@pytest.mark.integration
@pytest_twisted.ensureDeferred
async def test_curl_digest_logs_in(soap_port: Any) -> None:
    """curl --digest sends its first POST with an empty body, gets the 401 challenge, then logs in."""
    relay, port = soap_port
    status, body, trace = await deferToThread(_curl_digest, f"http://127.0.0.1:{port}{PATH}")
    assert "Content-Length: 0" in trace and "HTTP/1.1 401" in trace, trace
    assert status == 200 and b"GetHostnameResponse" in body, (status, body, trace)
    assert [call.caller.username for call in relay.calls] == ["admin"]


def test_empty_body_without_credentials_is_challenged(soap_relay: SoapRelay) -> None:
    """An empty POST without credentials gets 401 with the Digest challenges, not a malformed-XML 400."""
    reply = soap_relay.post(b"")
    assert any(value.startswith("Digest ") for value in reply.header("www-authenticate"))
    assert_fault(reply, "Sender", ("NotAuthorized",), 401)


def test_replay_memory_add_holds_each_fingerprint_once_and_nothing_its_horizon_covers() -> None:
    """``add`` refuses a held fingerprint and one dated at or before what the full memory forgot; put keeps counts."""
    memory = ReplayMemory(2, "test")
    assert memory.add(1, 10.0, "a", now=0.0) and memory.add(2, 20.0, "a", now=0.0)
    assert not memory.add(1, 30.0, "a", now=0.0)  # held already
    assert memory.add(3, 30.0, "a", now=0.0)  # over the cap: 1 (time 10) is forgotten
    assert memory.get(1) is None and memory.horizon("a") == 10.0 and memory.horizon("b") == float("-inf")
    assert not memory.add(1, 10.0, "a", now=0.0)  # forgotten, but covered by the horizon
    assert memory.add(4, 5.0, "b", now=0.0) is True  # another owner's horizon is its own...
    assert memory.get(4) is None and memory.horizon("b") == 5.0  # ...and the oldest entry goes at once
    memory.put(3, 30.0, "a", 7, now=0.0)
    assert memory.get(3) == 7 and len(memory) == 2
