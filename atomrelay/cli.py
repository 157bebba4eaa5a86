"""``atomrelay run|check|demo|mediamtx-config``: the console entry point.

``run`` and ``demo`` start twistd through its application runner with an explicit
options class, so the frozen binary never depends on Twisted's plugin discovery.
Their log goes to stdout one line per event (``level=... logger=... msg="..."``),
with a ``<N>`` priority prefix instead of a timestamp when stdout is the journal.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import re
import secrets
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import IO, Any, Sequence, cast
from urllib.parse import urlsplit

from twisted.application import app
from twisted.application.service import IService

from atomrelay import __version__
from atomrelay.config import MODELS, CameraConfig, Config, ConfigError, load_config

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


# --- logging ---------------------------------------------------------------------------------

_LEVELS = ("debug", "info", "warn", "error", "critical")
_SYSLOG_PRIORITY = {"debug": 7, "info": 6, "warn": 4, "error": 3, "critical": 2}
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s\"']*):[^@/\s\"']*@")
# Twisted's per-connection factory messages and twisted.web's access log lines (one per
# NVR request) are debug chatter for an operator: shown with -v only.
_CHATTER = re.compile(r'^(?:(?:Starting|Stopping) factory |"[^"]*" - \S+ \[)')


def redact(text: str) -> str:
    """``text`` with the password of every ``scheme://user:password@`` URL replaced by ``***``."""
    return _URL_PASSWORD.sub(r"\1:***@", text)


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return f'"{escaped}"'


def format_log_line(event: Mapping[str, Any], journal: bool = False) -> tuple[str, str]:
    """One event as (level, one line without newline), secrets in URLs redacted.

    The line is ``level=... logger=... msg="..."`` (plus ``error="..."`` with an escaped
    traceback), after the time, or after the syslog priority (``<6>``) on the journal,
    which timestamps lines itself. Text printed to stdout passes through as it is.
    """
    from twisted.logger import formatEvent, formatTime

    name = getattr(event.get("log_level"), "name", "info")
    namespace = event.get("log_namespace") or "-"
    message = redact(formatEvent(dict(event)))
    if name == "info" and _CHATTER.match(message):
        name = "debug"
    if namespace == "stdout":
        return name, message.replace("\n", " ")
    line = f"level={name} logger={namespace} msg={_quote(message)}"
    failure = event.get("log_failure")
    if failure is not None:
        try:
            trace = failure.getTraceback()
        except Exception:  # noqa: BLE001 - a broken failure must not break logging
            trace = repr(failure)
        line += f" error={_quote(redact(trace.rstrip()))}"
    if journal:
        return name, f"<{_SYSLOG_PRIORITY.get(name, 6)}>{line}"
    return name, f"{formatTime(event.get('log_time'))} {line}"


def stream_is_journal(stream: IO[str], environ: Mapping[str, str]) -> bool:
    """Whether ``stream`` is connected to journald (``$JOURNAL_STREAM`` names its device:inode)."""
    value = environ.get("JOURNAL_STREAM", "")
    try:
        device, inode = (int(part) for part in value.split(":"))
        info = os.fstat(stream.fileno())
    except (ValueError, OSError, AttributeError):
        return False
    return info.st_dev == device and info.st_ino == inode


def log_observer(verbose: bool = False, stream: IO[str] | None = None,
                 environ: Mapping[str, str] | None = None) -> Any:
    """A log observer writing one line per event to ``stream`` (stdout), info and up unless ``verbose``.

    Also usable as ``twistd --logger=atomrelay.cli.log_observer``.
    """
    from twisted.logger import ILogObserver
    from zope.interface import directlyProvides

    out = stream if stream is not None else sys.stdout
    journal = stream_is_journal(out, os.environ if environ is None else environ)
    minimum = _LEVELS.index("debug" if verbose else "info")

    def observe(event: Mapping[str, Any]) -> None:
        level, line = format_log_line(event, journal)
        rank = _LEVELS.index(level) if level in _LEVELS else _LEVELS.index("info")
        if rank >= minimum:
            out.write(line + "\n")
            out.flush()

    cast(Any, directlyProvides)(observe, ILogObserver)
    return observe


# --- twistd ---------------------------------------------------------------------------------


class _ForegroundRunner(app.ApplicationRunner):
    """twistd's runner for a process that stays in the foreground (no fork, pid file or user switch).

    Like ``twistd.runApp``, except that a SIGTERM/SIGINT stop exits 0 instead of
    re-raising the signal.
    """

    def preApplication(self) -> None:
        """Keep the standard streams for the reactor's logging."""
        self.oldstdout = sys.stdout
        self.oldstderr = sys.stderr

    def postApplication(self) -> None:
        """Start the application and run the reactor until it stops."""
        service: Any = IService(self.application)
        service.privilegedStartService()
        app.startApplication(self.application, not self.config["no_save"])  # type: ignore[no-untyped-call]
        self.startReactor(None, self.oldstdout, self.oldstderr)  # type: ignore[no-untyped-call]


def _twistd(subcommand: str, options_class: Any, argv: list[str], make: Any, verbose: bool = False) -> int:
    from twisted.python import usage
    from twisted.scripts import twistd

    base: Any = getattr(twistd, "ServerOptions")

    class ServerOptions(base):  # type: ignore[misc]
        subCommands = [(subcommand, None, options_class, "atomrelay")]

    class Plugin:
        tapname = subcommand

        def makeService(self, options: Any) -> Any:
            return make(options)

    config = ServerOptions()
    try:
        config.parseOptions(["--nodaemon", "--pidfile=", subcommand, *argv])
    except usage.UsageError as exc:
        print(f"atomrelay: {exc}", file=sys.stderr)
        return 2
    config.loadedPlugins = {subcommand: Plugin()}
    config["logger"] = lambda: log_observer(verbose)
    runner: Any = _ForegroundRunner(config)  # type: ignore[no-untyped-call]
    runner.run()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the relay in the foreground (as systemd or a terminal wants it)."""
    from atomrelay import tap

    access_log = ["--access-log"] if args.verbose else []
    return _twistd("atomrelay", tap.Options, ["--config", args.config, *access_log], tap.makeService, args.verbose)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the relay against three simulated cameras and a mediamtx stand-in."""
    from twisted.python import usage

    from atomrelay import tap

    class DemoOptions(usage.Options):
        optParameters = [["port", "p", "8080", "ONVIF port on 127.0.0.1", int]]

    def make(options: Any) -> Any:
        from twisted.internet import reactor

        return tap.make_demo_service(reactor, options["port"])

    return _twistd("atomrelay-demo", DemoOptions, ["--port", str(args.port)], make, args.verbose)


def cmd_mediamtx_config(args: argparse.Namespace) -> int:
    """Print the mediamtx.yml settings the relay needs."""
    from atomrelay.mediamtx.settings import mediamtx_config_fragment

    config = _load(args.config)
    if config is None:
        return 2
    sys.stdout.write(mediamtx_config_fragment(config))
    return 0


# --- check ----------------------------------------------------------------------------------


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config, reach mediamtx and every camera, print a table."""
    config = _load(args.config)
    if config is None:
        return 2
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    results: list[CheckResult] = []

    def main(reactor: Any) -> Deferred[None]:
        async def run() -> None:
            results.extend(await run_checks(reactor, config, show_webhooks=args.show_webhooks))

        return Deferred.fromCoroutine(run())

    try:
        react(main)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    print(format_table(results))
    failed = sum(1 for row in results if row.status == "FAIL")
    warned = sum(1 for row in results if row.status == "WARN")
    print(f"{failed} failed, {warned} warnings")
    return 1 if failed else 0


async def run_checks(reactor: Any, config: Config, show_webhooks: bool = False) -> list[CheckResult]:
    """Every check of ``atomrelay check``, in display order."""
    import treq

    from atomrelay import tls
    from atomrelay.mediamtx.client import MediamtxClient

    http = treq.client.HTTPClient(tls.agent(reactor))
    rows = [CheckResult("OK", "config", f"{config.source}: {len(config.cameras)} cameras, "
                                       f"{sum(len(c.streams) for c in config.cameras)} streams")]
    rows += config_file_rows(config.source)
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
        return [CheckResult("FAIL", "mediamtx", f"{url}: {exc}")]
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


def child_environ(environ: Mapping[str, str] | None = None, frozen: bool | None = None) -> dict[str, str]:
    """The environment for programs the relay runs: in a frozen build, without the bundle's library path."""
    env = dict(os.environ if environ is None else environ)
    if getattr(sys, "frozen", False) if frozen is None else frozen:
        original = env.pop("LD_LIBRARY_PATH_ORIG", None)
        if original is not None:
            env["LD_LIBRARY_PATH"] = original
        else:
            env.pop("LD_LIBRARY_PATH", None)
    return env


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
    client = CameraClient(http, camera, timeout=5.0)
    subject = f"camera {camera.id}"
    try:
        await client.status()
    except CameraError as exc:
        rows.append(CheckResult("FAIL", subject, str(exc)))
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
    endpoint_cls = TCP6ClientEndpoint if ":" in camera.host else TCP4ClientEndpoint
    endpoint = endpoint_cls(reactor, camera.host, camera.rtsp_port, timeout=5)
    try:
        protocol: Any = await endpoint.connect(cast(Any, Factory.forProtocol(Protocol)))
        protocol.transport.loseConnection()
        rows.append(CheckResult("OK", f"{subject} rtsp", f"{camera.host}:{camera.rtsp_port} accepts connections"))
    except Exception as exc:  # noqa: BLE001 - any connection failure is the answer
        rows.append(CheckResult("FAIL", f"{subject} rtsp", f"{camera.host}:{camera.rtsp_port}: {exc}"))
    if camera.webhook_token is None:
        rows.append(CheckResult("WARN", f"{subject} webhook",
                                f"no webhook_token: motion events off; e.g. webhook_token: {secrets.token_urlsafe(18)}"))
    elif show_webhooks:
        host = config.onvif.advertise_host or "<relay address>"
        rows.append(CheckResult("OK", f"{subject} webhook",
                                f"WEBHOOK_URL=http://{host}:{config.onvif.port}/webhook/{camera.id}/{camera.webhook_token}"))
    return rows


def format_table(rows: Sequence[CheckResult]) -> str:
    """Aligned STATUS / CHECK / DETAIL columns."""
    width = max([len("CHECK")] + [len(r.subject) for r in rows])
    lines = [f"{'STATUS':6}  {'CHECK':{width}}  DETAIL"]
    lines += [f"{r.status:6}  {r.subject:{width}}  {r.detail}" for r in rows]
    return "\n".join(lines)


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``atomrelay`` command."""
    parser = argparse.ArgumentParser(prog="atomrelay", description="ONVIF relay for ATOM Cam cameras and mediamtx")
    parser.add_argument("--version", action="version", version=f"atomrelay {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the relay in the foreground")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("-v", "--verbose", action="store_true", help="log debug messages and every HTTP request too")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate the config and reach mediamtx and every camera")
    check.add_argument("-c", "--config", required=True)
    check.add_argument("--show-webhooks", action="store_true", help="print each camera's WEBHOOK_URL (a secret)")
    check.set_defaults(func=cmd_check)
    demo = sub.add_parser("demo", help="run on simulated cameras and a mediamtx stand-in, on 127.0.0.1")
    demo.add_argument("-p", "--port", type=int, default=8080)
    demo.add_argument("-v", "--verbose", action="store_true", help="log debug messages too")
    demo.set_defaults(func=cmd_demo)
    mtx = sub.add_parser("mediamtx-config", help="print the mediamtx.yml settings the relay needs")
    mtx.add_argument("-c", "--config", required=True)
    mtx.set_defaults(func=cmd_mediamtx_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point."""
    from atomrelay.tls import import_twisted_without_tls

    import_twisted_without_tls()  # before any command imports Twisted's networking (see atomrelay.tls)
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
