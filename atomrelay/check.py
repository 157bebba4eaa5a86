"""``atomrelay check``: the config, mediamtx (version, settings), ffmpeg and every camera (and its firmware), as rows."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence, cast
from urllib.parse import urlsplit

from atomrelay.buildinfo import child_environ
from atomrelay.config import MODELS, CameraConfig, Config

MEDIAMTX_MINIMUM = (1, 15, 0)
"""The first mediamtx with ``GET /v3/info``, which the reconciler polls to notice restarts."""

MEDIAMTX_TESTED = (1, 20, 1)
"""The mediamtx release the relay is tested against (its OpenAPI spec is in the reference set)."""

MEDIAMTX_KNOWN_BAD: Mapping[str, str] = {}
"""Releases that break the relay, version -> why (with a link). None is known so far."""

FFMPEG_TIMEOUT = 15.0


@dataclass(frozen=True)
class CheckResult:
    """One row of ``atomrelay check`` output."""

    status: str  # OK | FAIL | WARN | SKIP
    subject: str
    detail: str


async def run_checks(reactor: Any, config: Config, show_webhooks: bool = False) -> list[CheckResult]:
    """Every check of ``atomrelay check``, in display order."""
    from atomrelay.mediamtx.client import MediamtxClient
    from atomrelay.wiring import camera_http_client

    http = camera_http_client(reactor)
    rows = [CheckResult("OK", "config", f"{config.source}: {len(config.cameras)} cameras, "
                                       f"{sum(len(c.streams) for c in config.cameras)} streams")]
    rows += config_file_rows(config.source)
    rows += state_rows(config.state_dir)
    rows += await mediamtx_rows(MediamtxClient(http, config.mediamtx, clock=reactor), config)
    rows += await ffmpeg_rows(reactor, config)
    rows += stream_rows(config)
    for camera in config.cameras:
        rows += await camera_rows(reactor, http, config, camera, show_webhooks)
    return rows


def config_file_rows(path: str) -> list[CheckResult]:
    """A warning when everybody may read the config file, which holds passwords."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return []
    if mode & 0o004:
        return [CheckResult("WARN", "config file", f"{path} is readable by every user and holds passwords: "
                                                   f"chmod o-r (0640, group of the service user)")]
    return []


def state_rows(state_dir: Path) -> list[CheckResult]:
    """Whether the user running ``check`` (run it as the service user) can keep the relay's state in ``state_dir``
    and read every saved document there; nothing is created or changed."""
    import getpass

    user = getpass.getuser()
    try:
        return _state_rows(state_dir, user)
    except OSError as exc:  # a parent the user may not enter (/var/lib/atomrelay is 0700)
        return [CheckResult("FAIL", "state_dir", f"{user} cannot reach {state_dir} ({exc.strerror or exc}): run "
                                                 f"check as the relay's user (sudo -u <user> atomrelay check)")]


def _state_rows(state_dir: Path, user: str) -> list[CheckResult]:
    import json

    if not state_dir.exists():
        parent = next((p for p in state_dir.parents if p.exists()), None)
        if parent is None or not os.access(parent, os.W_OK | os.X_OK):
            return [CheckResult("FAIL", "state_dir", f"{state_dir} does not exist and {user} cannot create it: "
                                                     f"create it, owned by the relay's user")]
        return [CheckResult("OK", "state_dir", f"{state_dir} will be created at the first start")]
    if not state_dir.is_dir() or not os.access(state_dir, os.R_OK | os.W_OK | os.X_OK):
        return [CheckResult("FAIL", "state_dir", f"{user} cannot write {state_dir}: make it a directory owned by "
                                                 f"the relay's user (chown -R <user>: {state_dir})")]
    rows: list[CheckResult] = []
    try:
        documents = sorted(state_dir.glob("*.json"))
    except OSError as exc:
        return [CheckResult("FAIL", "state_dir", f"cannot list {state_dir}: {exc.strerror or exc}")]
    for document in documents:
        try:
            with document.open("r", encoding="utf-8") as handle:
                json.load(handle)
        except OSError as exc:
            rows.append(CheckResult("FAIL", "state_dir", f"{user} cannot read {document} ({exc.strerror or exc}): "
                                                         f"the relay keeps it but saves nothing to it; chown it to "
                                                         f"the relay's user"))
        except (ValueError, RecursionError) as exc:
            rows.append(CheckResult("WARN", "state_dir", f"{document} is damaged ({exc}): the relay will move it "
                                                         f"aside and start without what it held"))
    return rows or [CheckResult("OK", "state_dir", f"{state_dir}: writable, {len(documents)} saved documents")]


def parse_version(text: str) -> tuple[int, int, int] | None:
    """``v1.20.1`` (or ``1.20.1-rc1``) as a tuple; None when it is no release number."""
    match = re.fullmatch(r"v?(\d+)\.(\d+)\.(\d+)(?:[-+.~].*)?", text.strip())
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3))


def _v(version: tuple[int, int, int]) -> str:
    return "v" + ".".join(str(part) for part in version)


def version_rows(version: str, api_url: str, known_bad: Mapping[str, str] = MEDIAMTX_KNOWN_BAD) -> list[CheckResult]:
    """The mediamtx version verdict: known-bad and too-old releases fail, untested older ones warn."""
    where = f"{api_url} answers, version {version}"
    number = parse_version(version)
    bad = known_bad.get(version) or (known_bad.get(_v(number)) if number is not None else None)
    if bad is not None:
        return [CheckResult("FAIL", "mediamtx", f"{where}: this release is known to break atomrelay: {bad}")]
    if number is None:
        return [CheckResult("WARN", "mediamtx", f"{where}: not a release number; atomrelay is tested with "
                                                f"{_v(MEDIAMTX_TESTED)}")]
    if number < MEDIAMTX_MINIMUM:
        return [CheckResult("FAIL", "mediamtx", f"{where}: atomrelay needs {_v(MEDIAMTX_MINIMUM)} or later "
                                                f"(tested with {_v(MEDIAMTX_TESTED)})")]
    if number < MEDIAMTX_TESTED:
        return [CheckResult("WARN", "mediamtx", f"{where}: older than {_v(MEDIAMTX_TESTED)}, the release atomrelay "
                                                f"is tested with; upgrade if streams misbehave")]
    return [CheckResult("OK", "mediamtx", where)]


async def mediamtx_rows(client: Any, config: Config) -> list[CheckResult]:
    """Reach mediamtx: its version (``/v3/info``) and its settings (``/v3/config/global/get``)."""
    from atomrelay.mediamtx.client import MediamtxError, RouteNotFound

    url = config.mediamtx.api_url
    rows: list[CheckResult] = []
    try:
        info = await client.info()
    except RouteNotFound:
        rows.append(CheckResult("FAIL", "mediamtx", f"{url} has no GET /v3/info: mediamtx is older than "
                                                    f"{_v(MEDIAMTX_MINIMUM)}; atomrelay needs it to notice restarts "
                                                    f"(tested with {_v(MEDIAMTX_TESTED)})"))
    except MediamtxError as exc:
        return [CheckResult("FAIL", "mediamtx", f"{url}: {exc}; start mediamtx with its API on (api: yes in "
                                                f"mediamtx.yml), or set mediamtx.api_url in {config.source}")]
    else:
        rows += version_rows(str(info["version"]), url)
    try:
        settings = await client.global_config()
    except MediamtxError as exc:
        rows.append(CheckResult("FAIL", "mediamtx settings", f"cannot read the global configuration: {exc}"))
        return rows
    return rows + settings_rows(config, settings)


def _address_port(address: object) -> int | None:
    if not isinstance(address, str) or ":" not in address:
        return None
    try:
        return int(address.rsplit(":", 1)[1])
    except ValueError:
        return None


def needs_srt(config: Config) -> bool:
    """Whether a stream publishes over SRT (H.265 with transcoded audio)."""
    return any(s.codec == "h265" and s.audio == "transcode" for c in config.cameras for s in c.streams)


def settings_rows(config: Config, actual: Mapping[str, Any]) -> list[CheckResult]:
    """mediamtx's live global settings against ``atomrelay mediamtx-config``'s: one row per problem."""
    import yaml

    from atomrelay.mediamtx.paths import go_duration_seconds
    from atomrelay.mediamtx.settings import mediamtx_config_fragment

    wanted: dict[str, Any] = yaml.safe_load(mediamtx_config_fragment(config))
    fix = "fix mediamtx.yml (see atomrelay mediamtx-config)"
    srt_needed = needs_srt(config)
    problems: list[CheckResult] = []
    fine: list[str] = []

    def problem(status: str, key: str, detail: str) -> None:
        problems.append(CheckResult(status, f"mediamtx {key}", f"{detail}; {fix}"))

    def seconds(value: object) -> float | None:
        return go_duration_seconds(value) if isinstance(value, str) else None

    if actual.get("rtsp") is False:
        problem("FAIL", "rtsp", "the RTSP server is off: NVRs cannot read any stream")
    transports = actual.get("rtspTransports")
    if not isinstance(transports, list) or "tcp" not in transports:
        problem("FAIL", "rtspTransports", f"is {transports!r}, without tcp: the relay's pipelines and NVRs use TCP")
    elif set(transports) != {"tcp"}:
        problem("WARN", "rtspTransports", f"is {transports!r}: NVRs may choose UDP, which loses packets; want [tcp]")
    else:
        fine.append("rtspTransports")
    if _address_port(actual.get("rtspAddress")) != config.mediamtx.rtsp_port:
        problem("FAIL", "rtspAddress", f"is {actual.get('rtspAddress')!r} but mediamtx.rtsp_port is "
                                       f"{config.mediamtx.rtsp_port}: stream URIs would point at the wrong port")
    else:
        fine.append("rtspAddress")
    methods = actual.get("rtspAuthMethods")
    if not isinstance(methods, list) or "basic" not in methods:
        problem("FAIL", "rtspAuthMethods", f"is {methods!r}: readers must be able to send basic credentials")
    elif set(methods) != {"basic"}:
        problem("FAIL", "rtspAuthMethods", f"is {methods!r}: clients pick digest, which mediamtx cannot check "
                                           f"against the relay or hashed passwords; want [basic]")
    else:
        fine.append("rtspAuthMethods")
    srt_status = "FAIL" if srt_needed else "WARN"
    srt_why = "H.265 streams with audio: transcode publish over SRT" if srt_needed else "no stream needs it yet"
    if actual.get("srt") is not True:
        problem(srt_status, "srt", f"SRT is off ({srt_why})")
    else:
        fine.append("srt")
    if _address_port(actual.get("srtAddress")) != config.mediamtx.srt_port:
        problem(srt_status, "srtAddress", f"is {actual.get('srtAddress')!r} but mediamtx.srt_port is "
                                          f"{config.mediamtx.srt_port} ({srt_why})")
    else:
        fine.append("srtAddress")
    read_timeout, want_timeout = seconds(actual.get("readTimeout")), seconds(wanted["readTimeout"])
    if read_timeout is None or want_timeout is None or read_timeout < want_timeout:
        problem("WARN", "readTimeout", f"is {actual.get('readTimeout')!r}: NVRs that pause reading get dropped; "
                                       f"want {wanted['readTimeout']}")
    else:
        fine.append("readTimeout")
    queue = actual.get("writeQueueSize")
    if not isinstance(queue, int) or queue < wanted["writeQueueSize"]:
        problem("WARN", "writeQueueSize", f"is {queue!r}: readers that fall behind lose packets; "
                                          f"want {wanted['writeQueueSize']}")
    else:
        fine.append("writeQueueSize")
    method = actual.get("authMethod")
    if method != wanted["authMethod"]:
        problem("FAIL", "authMethod", f"is {method!r} but mediamtx.auth is {config.mediamtx.auth}, "
                                      f"which needs {wanted['authMethod']!r}")
    else:
        fine.append("authMethod")
    if config.mediamtx.auth == "relay":
        address = actual.get("authHTTPAddress")
        if address != wanted["authHTTPAddress"]:
            problem("FAIL", "authHTTPAddress", f"is {address!r}: mediamtx must ask the relay at "
                                               f"{wanted['authHTTPAddress']}")
        else:
            fine.append("authHTTPAddress")
        excluded = actual.get("authHTTPExclude")
        if excluded:
            actions = sorted({str(e.get("action")) for e in excluded if isinstance(e, dict)})
            problem("WARN", "authHTTPExclude", f"lets {', '.join(actions) or 'some actions'} through without "
                                               f"asking the relay; want []")
        else:
            fine.append("authHTTPExclude")
    rows = problems
    if fine:
        rows = [CheckResult("OK", "mediamtx settings", ", ".join(fine) + " as atomrelay needs them"), *problems]
    return rows


def is_loopback_url(url: str) -> bool:
    """Whether ``url`` points at this host (localhost or a loopback address)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def ffmpeg_needs(config: Config) -> dict[str, list[str]]:
    """What mediamtx's ffmpeg must provide (``encoder:x`` / ``protocol:x``) -> the streams needing it."""
    needs: dict[str, list[str]] = {}
    for camera in config.cameras:
        for stream in camera.streams:
            if stream.audio != "transcode":
                continue
            wanted = ["encoder:pcm_mulaw"] if stream.codec == "h264" else ["encoder:aac", "protocol:srt"]
            for item in wanted:
                needs.setdefault(item, []).append(f"{camera.id}/{stream.name}")
    return needs


def _listed_names(text: str, section: str | None = None) -> set[str]:
    """Names from ``ffmpeg -encoders`` (second column) or the ``section`` part of ``ffmpeg -protocols``."""
    names: set[str] = set()
    inside = section is None
    for line in text.splitlines():
        stripped = line.strip()
        if section is not None and stripped.endswith(":"):
            inside = stripped[:-1].lower() == section
            continue
        if not inside or not stripped:
            continue
        parts = stripped.split()
        if section is None:
            if len(parts) >= 2 and re.fullmatch(r"[VASFXBD.]{6}", parts[0]):
                names.add(parts[1])
        else:
            names.add(parts[0])
    return names


def ffmpeg_capability_rows(executable: str, needs: Mapping[str, list[str]], encoders: str,
                           protocols: str) -> list[CheckResult]:
    """Whether the ``ffmpeg -encoders`` / ``-protocols`` listings cover ``needs``."""
    have = {f"encoder:{name}" for name in _listed_names(encoders)}
    have |= {f"protocol:{name}" for name in _listed_names(protocols, "output")}
    missing = [item for item in needs if item not in have]
    if not missing:
        listed = ", ".join(item.split(":", 1)[1] for item in sorted(needs))
        return [CheckResult("OK", "ffmpeg", f"{executable} has {listed}")]
    rows = []
    for item in missing:
        kind, name = item.split(":", 1)
        hint = " (libsrt)" if item == "protocol:srt" else ""
        streams = ", ".join(needs[item])
        rows.append(CheckResult("FAIL", "ffmpeg", f"{executable} lacks the {name} {kind}{hint} needed by {streams}; "
                                                  f"install a full ffmpeg build (Debian: apt-get install ffmpeg)"))
    return rows


async def ffmpeg_rows(reactor: Any, config: Config) -> list[CheckResult]:
    """The ffmpeg that mediamtx runs for transcode paths: found, with libsrt, aac and pcm_mulaw as needed."""
    from twisted.internet.utils import getProcessOutputAndValue

    needs = ffmpeg_needs(config)
    if not needs:
        return [CheckResult("OK", "ffmpeg", "not needed: no stream transcodes audio")]
    configured = config.mediamtx.ffmpeg
    if not is_loopback_url(config.mediamtx.api_url):
        return [CheckResult("SKIP", "ffmpeg", f"mediamtx runs on {urlsplit(config.mediamtx.api_url).hostname}: "
                                              f"check there that {configured!r} has libsrt, aac and pcm_mulaw")]
    executable = shutil.which(configured)
    if executable is None:
        streams = len({name for names in needs.values() for name in names})
        return [CheckResult("FAIL", "ffmpeg", f"mediamtx.ffmpeg {configured!r} is not an executable on this host "
                                              f"(mediamtx runs it for {streams} stream(s) with audio: transcode); "
                                              f"Debian: apt-get install ffmpeg")]
    outputs: list[str] = []
    for listing in ("-encoders", "-protocols"):
        try:
            deferred = cast(Any, getProcessOutputAndValue)(executable, ["-hide_banner", listing],
                                                           env=child_environ(), reactor=reactor)
            out, err, code = await deferred.addTimeout(FFMPEG_TIMEOUT, reactor)
        except Exception as exc:  # noqa: BLE001 - whatever went wrong is the answer
            return [CheckResult("FAIL", "ffmpeg", f"{executable} {listing} failed: {exc or type(exc).__name__}")]
        if code != 0:
            text = err.decode("utf-8", "replace").strip().splitlines()
            return [CheckResult("FAIL", "ffmpeg", f"{executable} {listing} exited {code}: "
                                                  f"{text[-1] if text else 'no output'}")]
        outputs.append(out.decode("utf-8", "replace"))
    return ffmpeg_capability_rows(executable, needs, outputs[0], outputs[1])


def stream_rows(config: Config) -> list[CheckResult]:
    """Config-only advice: an H.264 profile for Home Assistant, audio codecs NVRs cannot take."""
    rows: list[CheckResult] = []
    if not any(s.codec == "h264" for c in config.cameras for s in c.streams):
        rows.append(CheckResult("WARN", "profiles", "no h264 stream: Home Assistant needs at least one H.264 profile"))
    for camera in config.cameras:
        for stream in camera.streams:
            if stream.audio != "passthrough" or stream.audio_codec == "aac":
                continue
            subject = f"stream {camera.id}/{stream.name} audio"
            if stream.audio_codec is None:
                detail = "audio: passthrough without audio_codec: NVRs are told no audio codec"
            else:
                detail = (f"{stream.audio_codec} passes through, which NVRs cannot decode (ONVIF offers G.711 "
                          f"and AAC)")
            rows.append(CheckResult("WARN", subject, detail + "; use audio: transcode"))
    return rows


def model_rows(camera: CameraConfig, hardware: Mapping[str, str]) -> list[CheckResult]:
    """The camera's reported PRODUCT_MODEL against the configured ``model``."""
    reported = hardware.get("PRODUCT_MODEL")
    subject = f"camera {camera.id} model"
    known = [m for m in MODELS if m != "auto"]
    if reported is None:
        if camera.model == "auto":
            return [CheckResult("WARN", subject, "hack_ini.cgi has no PRODUCT_MODEL: set model: to one of "
                                                 + ", ".join(known))]
        return []
    if reported not in known:
        return [CheckResult("WARN", subject, f"{reported!r} is not a model atomrelay knows ({', '.join(known)}): "
                                             f"PTZ and field of view follow the configured model ({camera.model})")]
    if camera.model not in ("auto", reported):
        return [CheckResult("WARN", subject, f"configured {camera.model} but the camera reports {reported}; "
                                             f"use model: auto or {reported}")]
    return []


async def camera_rows(reactor: Any, http: Any, config: Config, camera: CameraConfig,
                      show_webhooks: bool) -> list[CheckResult]:
    """One camera: HTTP status and model, RTSP port, webhook."""
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol

    from atomrelay.camera.client import CameraClient, CameraError

    rows: list[CheckResult] = []
    client = CameraClient(http, camera, timeout=5.0, clock=reactor)
    subject = f"camera {camera.id}"
    key = f"cameras[{config.cameras.index(camera)}]"
    try:
        await client.status()
    except CameraError as exc:
        rows.append(CheckResult("FAIL", subject, f"{exc}; is the camera on, with atomcam_tools' web page at "
                                                 f"http://{camera.host}:{camera.http_port}/? Else fix {key}.host, "
                                                 f"{key}.http_port or {key}.username/password in {config.source}"))
    else:
        detail = f"http://{camera.host}:{camera.http_port} answers"
        try:
            hardware = await client.hardware()
        except CameraError as exc:
            hardware = {}
            if camera.model == "auto":
                rows.append(CheckResult("WARN", f"{subject} model", f"cannot read hack_ini.cgi ({exc}): "
                                                                    f"set model: explicitly"))
        if "PRODUCT_MODEL" in hardware:
            detail += f", model {hardware['PRODUCT_MODEL']}"
        rows.insert(0, CheckResult("OK", subject, detail))
        if hardware:
            rows += model_rows(camera, hardware)
        from atomrelay.addcamera import firmware_findings

        findings = await firmware_findings(reactor, http, config, camera, show_webhooks, child_environ())
        rows += [CheckResult(*finding) for finding in findings]
    endpoint_cls = TCP6ClientEndpoint if ":" in camera.host else TCP4ClientEndpoint
    endpoint = endpoint_cls(reactor, camera.host, camera.rtsp_port, timeout=5)
    try:
        protocol: Any = await endpoint.connect(cast(Any, Factory.forProtocol(Protocol)))
        protocol.transport.loseConnection()
        rows.append(CheckResult("OK", f"{subject} rtsp", f"{camera.host}:{camera.rtsp_port} accepts connections"))
    except Exception as exc:  # noqa: BLE001 - any connection failure is the answer
        rows.append(CheckResult("FAIL", f"{subject} rtsp", f"{camera.host}:{camera.rtsp_port}: {exc}; turn RTSP "
                                                          f"on in the camera's atomcam_tools page, or fix "
                                                          f"{key}.rtsp_port"))
    if camera.webhook_token is None:
        rows.append(CheckResult("WARN", f"{subject} webhook",
                                f"no webhook_token: motion events off; e.g. webhook_token: {secrets.token_urlsafe(18)}"))
    return rows


def format_table(rows: Sequence[CheckResult]) -> str:
    """Aligned STATUS / CHECK / DETAIL columns."""
    width = max([len("CHECK")] + [len(r.subject) for r in rows])
    lines = [f"{'STATUS':6}  {'CHECK':{width}}  DETAIL"]
    lines += [f"{r.status:6}  {r.subject:{width}}  {r.detail}" for r in rows]
    return "\n".join(lines)


