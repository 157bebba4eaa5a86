"""``atomrelay add-camera HOST``: a config entry from what the camera's firmware reports.

It reads the camera's hack.ini settings (only :data:`~atomrelay.camera.firmware.FIRMWARE_KEYS`),
asks the RTSP server what each enabled stream really carries (ffprobe, falling back to
the firmware's defaults), prints a commented ``cameras:`` entry, and with ``--write``
appends it to the config file in place: the new text is validated by loading it before
it atomically replaces the file. It then says what to set in the camera's web page.
The firmware comparisons of ``atomrelay check`` live here too (:func:`firmware_findings`).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from atomrelay.camera.client import CameraAuthError, CameraClient, CameraError, CameraHTTPError, CameraUnavailable
from atomrelay.camera.firmware import (
    STREAM_DEFAULTS,
    Firmware,
    ProbeError,
    StreamProbe,
    probe_stream,
    read_firmware,
    stream_index,
)
from atomrelay.config import ID_RE, MODELS, CameraConfig, Config, ConfigError, OnvifConfig, StreamConfig, parse_config

PROBE_TIMEOUT = 15.0
"""Seconds ffprobe gets per stream (the camera's main stream may take a few to send a key frame)."""

STREAM_NAMES = ("main", "sub", "hevc")
"""Config stream names for video0, video1 and video2."""

_WILDCARDS = ("0.0.0.0", "::", "")


class AddCameraError(Exception):
    """add-camera cannot go on; the message says what to do."""


@dataclass(frozen=True)
class PlannedStream:
    """One enabled firmware stream as the config will describe it, and where the numbers came from."""

    index: int
    codec: str
    width: int
    height: int
    fps: int
    firmware_audio: str
    probe_note: str

    @property
    def audio(self) -> str:
        """The audio mode that fits: none when off, passthrough for AAC, transcode for S16_BE/OPUS."""
        return {"off": "none", "AAC": "passthrough"}.get(self.firmware_audio, "transcode")


def plan_streams(firmware: Firmware, probes: dict[int, StreamProbe | str]) -> list[PlannedStream]:
    """The enabled streams, from ``probes`` (index -> probe, or why probing failed) or the firmware's defaults."""
    planned = []
    for defaults in STREAM_DEFAULTS:
        if not firmware.video_on(defaults.index):
            continue
        probe = probes.get(defaults.index, "not probed")
        audio = firmware.audio(defaults.index)
        if isinstance(probe, StreamProbe):
            planned.append(PlannedStream(defaults.index, probe.codec, probe.width, probe.height,
                                         probe.fps or firmware.framerate, audio, "probed"))
        else:
            planned.append(PlannedStream(defaults.index, defaults.codec, defaults.width, defaults.height,
                                         firmware.framerate, audio, f"firmware defaults ({probe})"))
    return planned


def camera_id_from(hostname: str) -> str:
    """A config id (``[a-z0-9_-]{1,30}``) made from the camera's HOSTNAME."""
    text = re.sub(r"[^a-z0-9_-]+", "-", hostname.lower()).strip("-")[:30].strip("-")
    return text or "camera"


def _yaml(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def camera_entry(camera: CameraConfig, firmware: Firmware, streams: list[PlannedStream], indent: str = "  ") -> str:
    """The commented YAML list item for ``camera`` (its streams from ``streams``), indented by ``indent``."""
    model = firmware.values.get("PRODUCT_MODEL", "")
    version = firmware.values.get("ATOMHACKVER", "?")
    lines = [f"# {camera.id}: {model or 'unknown model'}, atomcam_tools {version} (atomrelay add-camera)",
             f"- id: {camera.id}",
             f"  name: {_yaml(camera.name)}",
             f"  host: {_yaml(camera.host)}"]
    if camera.http_port != 80:
        lines.append(f"  http_port: {camera.http_port}")
    if camera.rtsp_port != 8554:
        lines.append(f"  rtsp_port: {camera.rtsp_port}")
    if camera.username is not None and camera.password is not None:
        lines += [f"  username: {_yaml(camera.username)}       # the web page's Digest login",
                  f"  password: {_yaml(camera.password)}"]
    if firmware.on("RTSP_AUTH"):
        if camera.rtsp_username is not None and camera.rtsp_password is not None:
            lines += [f"  rtsp_username: {_yaml(camera.rtsp_username)}  # RTSP_AUTH is on in the camera",
                      f"  rtsp_password: {_yaml(camera.rtsp_password)}"]
        else:
            lines.append("  # RTSP_AUTH is on in the camera: add rtsp_username and rtsp_password")
    lines.append(f"  model: {model if model in MODELS else 'auto'}")
    lines.append(f"  webhook_token: \"{camera.webhook_token}\"   # the secret in the camera's WEBHOOK_URL")
    lines.append("  streams:")
    for stream in streams:
        source = f"video{stream.index}_unicast"
        lines += [f"    - name: {STREAM_NAMES[stream.index]}   # {source}: {stream.probe_note}",
                  f"      rtsp_path: {source}",
                  f"      codec: {stream.codec}"]
        if stream.audio == "transcode":
            lines.append(f"      audio: transcode   # the camera sends {stream.firmware_audio}, which NVRs cannot play")
        elif stream.audio == "passthrough":
            lines += ["      audio: passthrough # the camera sends AAC, which NVRs play (or transcode)",
                      "      audio_codec: aac"]
        else:
            lines.append(f"      audio: none        # RTSP_AUDIO{stream.index} is off in the camera")
        lines += [f"      width: {stream.width}", f"      height: {stream.height}", f"      fps: {stream.fps}"]
    return "\n".join(indent + line for line in lines) + "\n"


def append_camera(path: Path, entry: str, camera: CameraConfig) -> Config:
    """Add ``entry`` at the end of the ``cameras:`` list of the config file at ``path``, in place.

    The file's other text is kept byte for byte. The result must load, with ``camera``
    as its last camera, before it atomically replaces the file (same mode); otherwise
    AddCameraError and the file is untouched. A duplicate id or host is refused.
    """
    text = path.read_text(encoding="utf-8")
    current = parse_config(text, str(path))
    for other in current.cameras:
        if other.id == camera.id:
            raise AddCameraError(f"{path} already has a camera with id {camera.id!r}: choose another with --id")
        if _same_host(other.host, camera.host):
            raise AddCameraError(f"{path} already has camera {other.id!r} on {other.host}")
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if re.match(r"cameras:\s*(#.*)?$", line.rstrip("\r\n"))), None)
    if start is None:
        raise AddCameraError(f"{path}: no block-style 'cameras:' line to append to; add the entry by hand")
    end = start + 1
    last = start
    while end < len(lines):
        line = lines[end]
        if line.strip() and not line[0].isspace() and not line.startswith(("-", "#")):
            break
        if line.strip() and not line.lstrip().startswith("#"):
            last = end
        end += 1
    item = next((re.match(r"(\s*)- ", lines[i]) for i in range(start + 1, last + 1)
                 if re.match(r"\s*- ", lines[i])), None)
    indent = item.group(1) if item is not None else "  "
    block = entry if indent == "  " else "".join(
        indent + line[2:] if line.startswith("  ") else line for line in entry.splitlines(keepends=True))
    head = "".join(lines[: last + 1])
    if head and not head.endswith("\n"):
        head += "\n"
    new_text = head + block + "".join(lines[last + 1:])
    try:
        result = parse_config(new_text, str(path))
    except ConfigError as exc:
        raise AddCameraError(f"{path}: the file with the new entry does not load, left unchanged:\n{exc}") from None
    if not result.cameras or result.cameras[-1].id != camera.id or len(result.cameras) != len(current.cameras) + 1:
        raise AddCameraError(f"{path}: the entry did not land in the cameras list; add it by hand")
    _replace(path, new_text)
    return result


def _replace(path: Path, text: str) -> None:
    mode = path.stat().st_mode & 0o7777
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def _same_host(a: str, b: str) -> bool:
    try:
        return ipaddress.ip_address(a) == ipaddress.ip_address(b)
    except ValueError:
        return a.lower().rstrip(".") == b.lower().rstrip(".")


def local_address_towards(host: str, port: int) -> str | None:
    """This machine's address on the route to ``host`` (a UDP connect: no packet is sent)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        family, _, _, _, address = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect(address)
            return str(probe.getsockname()[0])
    except (OSError, IndexError):
        return None


def relay_host(onvif: OnvifConfig, camera_host: str, camera_port: int) -> str | None:
    """The relay's host (with port when advertise_host has one) as the camera reaches it."""
    if onvif.advertise_host:
        return onvif.advertise_host
    if onvif.bind not in _WILDCARDS:
        return onvif.bind
    return local_address_towards(camera_host, camera_port)


def webhook_url(onvif: OnvifConfig, camera: CameraConfig) -> str | None:
    """The WEBHOOK_URL for ``camera`` on this relay; None without a token or a known relay address."""
    host = relay_host(onvif, camera.host, camera.http_port)
    if camera.webhook_token is None or host is None:
        return None
    if not _has_port(host):
        host = f"[{host}]:{onvif.port}" if ":" in host else f"{host}:{onvif.port}"
    return f"http://{host}/webhook/{camera.id}/{camera.webhook_token}"


def _has_port(host: str) -> bool:
    return host.startswith("[") and "]:" in host or host.count(":") == 1


def _urls_match(actual: str, wanted: str) -> bool:
    a, w = urlsplit(actual.strip()), urlsplit(wanted)
    try:
        same_port = (a.port or 80) == (w.port or 80)
    except ValueError:
        return False
    return (a.scheme == w.scheme and same_port and _same_host(a.hostname or "", w.hostname or "")
            and a.path.rstrip("/") == w.path)


# --- check ---------------------------------------------------------------------------------


class Finding(NamedTuple):
    """One row for ``atomrelay check``: status (OK/FAIL/WARN/SKIP), subject, detail."""

    status: str
    subject: str
    detail: str


def stream_findings(config: Config, camera: CameraConfig, firmware: Firmware,
                    probes: dict[str, StreamProbe | str]) -> list[Finding]:
    """Each configured stream against the firmware: switched on, codec, audio mode."""
    rows: list[Finding] = []
    index_of = config.cameras.index(camera)
    where = config.source
    for position, stream in enumerate(camera.streams):
        subject = f"camera {camera.id} stream {stream.name}"
        key = f"cameras[{index_of}].streams[{position}]"
        index = stream_index(stream.rtsp_path)
        if index is None:
            rows.append(Finding("SKIP", subject, f"{stream.rtsp_path} is not a videoN_unicast path of the firmware"))
            continue
        if not firmware.video_on(index):
            rows.append(Finding("FAIL", subject, f"RTSP_VIDEO{index} is off in the camera: turn on video{index} "
                                                 f"RTSP in the camera's web page (or remove {key} from {where})"))
            continue
        probe = probes.get(stream.name)
        codec = probe.codec if isinstance(probe, StreamProbe) else STREAM_DEFAULTS[index].codec
        source = "sends" if isinstance(probe, StreamProbe) else f"sends by default ({probe})"
        problems = 0
        if stream.codec != codec:
            problems += 1
            rows.append(Finding("FAIL", subject, f"{key}.codec is {stream.codec} but video{index} {source} "
                                                 f"{codec}: set codec: {codec} in {where}"))
        audio = firmware.audio(index)
        if audio == "off" and stream.audio != "none":
            problems += 1
            rows.append(Finding("FAIL", subject, f"{key}.audio is {stream.audio} but RTSP_AUDIO{index} is off: set "
                                                 f"audio: none in {where}, or turn on RTSP_AUDIO{index} in the "
                                                 f"camera's web page"))
        elif stream.audio == "passthrough" and audio != "AAC":
            problems += 1
            rows.append(Finding("FAIL", subject, f"{key}.audio is passthrough but the camera sends {audio}, which "
                                                 f"no NVR plays: set audio: transcode in {where} (or AAC as "
                                                 f"RTSP_AUDIO{index} in the camera's web page)"))
        elif stream.audio == "passthrough" and stream.audio_codec != "aac":
            problems += 1
            rows.append(Finding("FAIL", subject, f"{key}.audio_codec is {stream.audio_codec} but the camera sends "
                                                 f"AAC: set audio_codec: aac in {where}"))
        if not problems:
            rows.append(Finding("OK", subject, f"video{index} {source} {codec}, audio {audio} ({stream.audio})"))
    return rows


def webhook_findings(config: Config, camera: CameraConfig, firmware: Firmware, show: bool) -> list[Finding]:
    """WEBHOOK, WEBHOOK_URL (this relay's, with the token) and WEBHOOK_ALARM_EVENT against the config."""
    if camera.webhook_token is None:
        return []
    subject = f"camera {camera.id} webhook"
    wanted = webhook_url(config.onvif, camera)
    shown = wanted if show and wanted else "the URL `atomrelay check --show-webhooks` prints"
    rows: list[Finding] = []
    if not firmware.on("WEBHOOK"):
        rows.append(Finding("FAIL", subject, "WEBHOOK is off: turn on webhooks in the camera's web page"))
    actual = firmware.values.get("WEBHOOK_URL", "")
    if wanted is None:
        rows.append(Finding("WARN", subject, "cannot tell this relay's address as the camera reaches it: set "
                                             "onvif.advertise_host to compare WEBHOOK_URL"))
    elif not _urls_match(actual, wanted):
        what = "is empty" if not actual else "is not this relay's URL for this camera (or has another token)"
        rows.append(Finding("FAIL", subject, f"WEBHOOK_URL in the camera's web page {what}: set it to {shown}"))
    if not firmware.on("WEBHOOK_ALARM_EVENT"):
        rows.append(Finding("FAIL", subject, "WEBHOOK_ALARM_EVENT is off: turn on the alarm event webhook in the "
                                             "camera's web page (no motion events otherwise)"))
    if not rows:
        rows.append(Finding("OK", subject, f"WEBHOOK_URL={wanted}" if show else
                            "on, WEBHOOK_URL points at this relay with the configured token, alarm events on"))
    return rows


async def firmware_findings(reactor: Any, http: Any, config: Config, camera: CameraConfig, show_webhooks: bool,
                            env: dict[str, str] | None = None) -> list[Finding]:
    """Read the camera's firmware settings and probe its configured streams; every mismatch with ``config``."""
    client = CameraClient(http, camera, timeout=5.0, clock=reactor)
    try:
        firmware = await read_firmware(client)
    except CameraError as exc:
        return [Finding("WARN", f"camera {camera.id} firmware", f"cannot read hack_ini.cgi ({exc}): RTSP, audio "
                                                                f"and webhook settings not compared")]
    ffprobe = shutil.which("ffprobe")
    probes: dict[str, StreamProbe | str] = {}
    for stream in camera.streams:
        index = stream_index(stream.rtsp_path)
        if index is None or not firmware.video_on(index):
            continue
        probes[stream.name] = await _probe(reactor, ffprobe, camera, stream, env)
    return stream_findings(config, camera, firmware, probes) + webhook_findings(config, camera, firmware,
                                                                                show_webhooks)


async def _probe(reactor: Any, ffprobe: str | None, camera: CameraConfig, stream: StreamConfig,
                 env: dict[str, str] | None) -> StreamProbe | str:
    from atomrelay.mediamtx.paths import PathConfError, camera_rtsp_url

    if ffprobe is None:
        return "no ffprobe on PATH"
    try:
        return await probe_stream(reactor, ffprobe, camera_rtsp_url(camera, stream), PROBE_TIMEOUT, env)
    except (ProbeError, PathConfError) as exc:
        return f"probe failed: {exc}"


# --- the command ---------------------------------------------------------------------------


async def add_camera(reactor: Any, http: Any, args: argparse.Namespace, config: Config | None,
                     env: dict[str, str] | None = None) -> tuple[CameraConfig, str, str]:
    """Read and probe the camera; return its config, the YAML entry and what to set in its web page."""
    probe_camera = CameraConfig(id="new", name="", host=args.host, streams=(), http_port=args.http_port,
                                rtsp_port=args.rtsp_port, username=args.user, password=args.password,
                                rtsp_username=args.rtsp_user, rtsp_password=args.rtsp_password)
    where = f"http://{args.host}:{args.http_port}"
    client = CameraClient(http, probe_camera, timeout=10.0, clock=reactor)
    try:
        firmware = await read_firmware(client)
    except CameraAuthError:
        if args.user is None:
            raise AddCameraError(f"{where} requires HTTP Digest credentials: pass --user and --password "
                                 f"(the login of the camera's web page)") from None
        raise AddCameraError(f"{where} refused the Digest credentials of user {args.user!r}: check --user and "
                             f"--password (the login of the camera's web page)") from None
    except CameraHTTPError as exc:
        raise AddCameraError(f"{where} is not an atomcam_tools camera: GET /cgi-bin/hack_ini.cgi answered HTTP "
                             f"{exc.status}") from None
    except CameraUnavailable as exc:
        raise AddCameraError(f"camera unreachable: {exc}") from None
    if "PRODUCT_MODEL" not in firmware.values or "ATOMHACKVER" not in firmware.values:
        raise AddCameraError(f"{where} is not an atomcam_tools camera: hack_ini.cgi has no PRODUCT_MODEL "
                             f"and ATOMHACKVER")
    if not any(firmware.video_on(d.index) for d in STREAM_DEFAULTS):
        raise AddCameraError(f"RTSP is off on every stream of {where} (RTSP_VIDEO0/1/2): turn on at least the "
                             f"main stream (video0) in the camera's web page, then run add-camera again")
    ffprobe = shutil.which("ffprobe")
    probes: dict[int, StreamProbe | str] = {}
    for defaults in STREAM_DEFAULTS:
        if firmware.video_on(defaults.index):
            stream = StreamConfig(STREAM_NAMES[defaults.index], defaults.rtsp_path)
            probes[defaults.index] = await _probe(reactor, ffprobe, probe_camera, stream, env)
    planned = plan_streams(firmware, probes)
    hostname = firmware.values.get("HOSTNAME", "") or args.host
    camera_id = args.id or camera_id_from(hostname)
    if not ID_RE.match(camera_id):
        raise AddCameraError(f"--id {camera_id!r} is not [a-z0-9_-]{{1,30}}")
    camera = CameraConfig(
        id=camera_id, name=args.name or hostname, host=args.host, streams=(), http_port=args.http_port,
        rtsp_port=args.rtsp_port, username=args.user, password=args.password, rtsp_username=args.rtsp_user,
        rtsp_password=args.rtsp_password, webhook_token=secrets.token_urlsafe(18))
    if config is not None:
        for other in config.cameras:
            if other.id == camera.id:
                raise AddCameraError(f"{config.source} already has a camera with id {camera.id!r}: choose "
                                     f"another with --id")
            if _same_host(other.host, camera.host):
                raise AddCameraError(f"{config.source} already has camera {other.id!r} on {other.host}")
    return camera, camera_entry(camera, firmware, planned), camera_page_advice(config, camera, firmware, planned)


def camera_page_advice(config: Config | None, camera: CameraConfig, firmware: Firmware,
                       planned: list[PlannedStream]) -> str:
    """What to set in the camera's web page, as YAML comment lines."""
    onvif = config.onvif if config is not None else OnvifConfig()
    url = webhook_url(onvif, camera) or (f"http://<this relay's address>:{onvif.port}/webhook/{camera.id}/"
                                         f"{camera.webhook_token}")
    lines = ["In the camera's web page (http://" + camera.host + (f":{camera.http_port}" if camera.http_port != 80
                                                                  else "") + "/), set:",
             f"  WEBHOOK_URL: {url}"]
    if config is None:
        lines.append(f"    (port {onvif.port} is onvif.port; use this relay's onvif.port if you changed it)")
    for key, why in (("WEBHOOK", "webhooks"), ("WEBHOOK_ALARM_EVENT", "motion/sound events"),
                     ("WEBHOOK_ALARM_INFO", "person/vehicle/pet events")):
        state = "already on" if firmware.on(key) else "turn it on"
        lines.append(f"  {key}: on ({why}; {state})")
    if not firmware.on("RTSP_AUTH"):
        lines.append("  RTSP_AUTH: off now; to require a password for RTSP, turn it on and add rtsp_username "
                     "and rtsp_password to this entry")
    for stream in planned:
        if stream.probe_note != "probed":
            lines.append(f"  (video{stream.index}: {stream.probe_note}; check the numbers above)")
    return "\n".join("# " + line for line in lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """``atomrelay add-camera``: print the entry, or append it with ``--write``."""
    import treq
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    from atomrelay import tls
    from atomrelay.buildinfo import child_environ

    config: Config | None = None
    if args.config is not None:
        try:
            config = parse_config(Path(args.config).read_text(encoding="utf-8"), args.config)
        except (ConfigError, OSError) as exc:
            print(f"atomrelay add-camera: {exc}", file=sys.stderr)
            return 2
    elif args.write:
        print("atomrelay add-camera: --write needs -c CONFIG", file=sys.stderr)
        return 2
    outcome: list[int] = []

    def main(reactor: Any) -> Deferred[None]:
        async def go() -> None:
            http = treq.client.HTTPClient(tls.agent(reactor))
            try:
                camera, entry, advice = await add_camera(reactor, http, args, config, child_environ())
                if args.write:
                    assert config is not None
                    append_camera(Path(args.config), entry, camera)
                    print(f"added camera {camera.id} to {args.config}; `atomrelay check -c {args.config}` "
                          f"then a reload (systemctl reload atomrelay) puts it in service")
                else:
                    print("cameras:\n" + entry, end="")
                print(advice, end="")
                outcome.append(0)
            except (AddCameraError, ConfigError, OSError) as exc:
                print(f"atomrelay add-camera: {exc}", file=sys.stderr)
                outcome.append(1)

        return Deferred.fromCoroutine(go())

    try:
        react(main)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    return outcome[0] if outcome else 1
