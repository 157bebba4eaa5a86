"""``atomrelay run|check|add-camera|demo|mediamtx-config``: the console entry point.

``run`` and ``demo`` start twistd through its application runner with an explicit
options class, so the frozen binary never depends on Twisted's plugin discovery.
Their log goes to stdout one line per event (``level=... logger=... msg="..."``),
with a ``<N>`` priority prefix instead of a timestamp when stdout is the journal.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Mapping
from typing import IO, Any, Sequence, cast

from twisted.application import app
from twisted.application.service import IService

from atomrelay.buildinfo import VersionAction
from atomrelay.config import Config, ConfigError, load_config

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


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _quote(text: str) -> str:
    """``text`` in double quotes, with backslashes, quotes and control characters escaped: a peer's text in a
    message (a user name, a camera's reply) can neither end the line nor send a terminal escape sequence."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
    return '"' + _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", escaped) + '"'


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

    from atomrelay import demo

    class DemoOptions(usage.Options):
        optParameters = [["port", "p", "8080", "ONVIF port on 127.0.0.1", int]]

    def make(options: Any) -> Any:
        from twisted.internet import reactor

        return demo.make_demo_service(reactor, options["port"])

    return _twistd("atomrelay-demo", DemoOptions, ["--port", str(args.port)], make, args.verbose)


def cmd_add_camera(args: argparse.Namespace) -> int:
    """Read a camera's firmware and print (or ``--write``) its config entry."""
    from atomrelay import addcamera

    # A password on the command line is visible to every local user (ps): it may come from the
    # environment instead, or be asked for on the terminal.
    args.password = args.password or os.environ.get("ATOMRELAY_CAMERA_PASSWORD") or _ask(args.user, "camera web page")
    args.rtsp_password = (args.rtsp_password or os.environ.get("ATOMRELAY_RTSP_PASSWORD")
                          or _ask(args.rtsp_user, "RTSP"))
    if (args.user is None) != (args.password is None) or (args.rtsp_user is None) != (args.rtsp_password is None):
        print("atomrelay add-camera: --user/--password and --rtsp-user/--rtsp-password go in pairs", file=sys.stderr)
        return 2
    return addcamera.run(args)


def _ask(user: str | None, what: str) -> str | None:
    """The password of ``user`` asked on the terminal, when there is a user and a terminal to ask on."""
    if user is None or not sys.stdin.isatty():
        return None
    import getpass

    return getpass.getpass(f"{what} password of {user}: ") or None


def cmd_mediamtx_config(args: argparse.Namespace) -> int:
    """Print the mediamtx.yml settings the relay needs."""
    from atomrelay.mediamtx.settings import mediamtx_config_fragment

    config = _load(args.config)
    if config is None:
        return 2
    sys.stdout.write(mediamtx_config_fragment(config))
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config, reach mediamtx and every camera, print a table."""
    config = _load(args.config)
    if config is None:
        return 2
    from twisted.internet.defer import Deferred
    from twisted.internet.task import react

    from atomrelay import check

    results: list[check.CheckResult] = []

    def main(reactor: Any) -> Deferred[None]:
        async def run() -> None:
            results.extend(await check.run_checks(reactor, config, show_webhooks=args.show_webhooks))

        return Deferred.fromCoroutine(run())

    try:
        react(main)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    print(check.format_table(results))
    failed = sum(1 for row in results if row.status == "FAIL")
    warned = sum(1 for row in results if row.status == "WARN")
    print(f"{failed} failed, {warned} warnings")
    return 1 if failed else 0


def _load(path: str) -> Config | None:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return None


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``atomrelay`` command."""
    parser = argparse.ArgumentParser(prog="atomrelay", description="ONVIF relay for ATOM Cam cameras and mediamtx")
    parser.add_argument("--version", action=VersionAction)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the relay in the foreground")
    run.add_argument("-c", "--config", required=True)
    run.add_argument("-v", "--verbose", action="store_true", help="log debug messages and every HTTP request too")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate the config and reach mediamtx and every camera")
    check.add_argument("-c", "--config", required=True)
    check.add_argument("--show-webhooks", action="store_true", help="print each camera's WEBHOOK_URL (a secret)")
    check.set_defaults(func=cmd_check)
    add = sub.add_parser("add-camera", help="print a config entry for a camera, read from its firmware")
    add.add_argument("host", help="the camera's address")
    add.add_argument("--http-port", type=int, default=80)
    add.add_argument("--rtsp-port", type=int, default=8554)
    add.add_argument("--user", help="the camera web page's Digest user, if it has one")
    add.add_argument("--password", help="(or ATOMRELAY_CAMERA_PASSWORD, or asked on the terminal)")
    add.add_argument("--rtsp-user", help="the RTSP user, when RTSP_AUTH is on")
    add.add_argument("--rtsp-password", help="(or ATOMRELAY_RTSP_PASSWORD, or asked on the terminal)")
    add.add_argument("--id", help="config id (default: from the camera's HOSTNAME)")
    add.add_argument("--name", help="display name (default: the camera's HOSTNAME)")
    add.add_argument("-c", "--config", help="the relay's config: its address and port go into WEBHOOK_URL")
    add.add_argument("--write", action="store_true", help="append the entry to -c CONFIG (comments are kept)")
    add.set_defaults(func=cmd_add_camera)
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
