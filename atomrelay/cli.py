"""``atomrelay run|check|demo|mediamtx-config``: the console entry point.

``run`` and ``demo`` start twistd through ``twistd.runApp`` with an explicit options
class, so the frozen binary never depends on Twisted's plugin discovery.
"""

from __future__ import annotations

import argparse
import secrets
import sys
from dataclasses import dataclass
from typing import Any, Sequence, cast

from atomrelay import __version__
from atomrelay.config import Config, ConfigError, load_config


@dataclass(frozen=True)
class CheckResult:
    """One row of ``atomrelay check`` output."""

    status: str  # OK | FAIL | WARN
    subject: str
    detail: str


def _twistd(subcommand: str, options_class: Any, argv: list[str], make: Any) -> int:
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
    # Like twistd.runApp, but a SIGTERM/SIGINT stop exits 0 instead of re-raising the signal.
    runner: Any = getattr(twistd, "_SomeApplicationRunner")(config)
    runner.run()
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the relay in the foreground (as systemd or a terminal wants it)."""
    from atomrelay import tap

    return _twistd("atomrelay", tap.Options, ["--config", args.config], tap.makeService)


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the relay against three simulated cameras and a mediamtx stand-in."""
    from twisted.python import usage

    from atomrelay import tap

    class DemoOptions(usage.Options):
        optParameters = [["port", "p", "8080", "ONVIF port on 127.0.0.1", int]]

    def make(options: Any) -> Any:
        from twisted.internet import reactor

        return tap.make_demo_service(reactor, options["port"])

    return _twistd("atomrelay-demo", DemoOptions, ["--port", str(args.port)], make)


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
    print(f"{failed} failed, {sum(1 for r in results if r.status == 'WARN')} warnings" if failed or results else "")
    return 1 if failed else 0


async def run_checks(reactor: Any, config: Config, show_webhooks: bool = False) -> list[CheckResult]:
    """Every check of ``atomrelay check``, in display order."""
    import treq
    from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
    from twisted.internet.protocol import Factory, Protocol
    from twisted.web.client import Agent

    from atomrelay.camera.client import CameraClient, CameraError
    from atomrelay.mediamtx.client import MediamtxClient, MediamtxError

    http = treq.client.HTTPClient(cast(Any, Agent)(reactor))
    rows = [CheckResult("OK", "config", f"{config.source}: {len(config.cameras)} cameras, "
                                       f"{sum(len(c.streams) for c in config.cameras)} streams")]
    mediamtx = MediamtxClient(http, config.mediamtx, clock=reactor)
    try:
        info = await mediamtx.info()
        rows.append(CheckResult("OK", "mediamtx", f"{config.mediamtx.api_url} answers, version {info.get('version', '?')}"))
    except MediamtxError as exc:
        rows.append(CheckResult("FAIL", "mediamtx", f"{config.mediamtx.api_url}: {exc}"))
    if not any(s.codec == "h264" for c in config.cameras for s in c.streams):
        rows.append(CheckResult("WARN", "profiles", "no h264 stream: Home Assistant needs at least one H.264 profile"))
    for camera in config.cameras:
        client = CameraClient(http, camera, timeout=5.0)
        subject = f"camera {camera.id}"
        try:
            await client.status()
            detail = f"http://{camera.host}:{camera.http_port} answers"
            if camera.model == "auto":
                hardware = await client.hardware()
                detail += f", model {hardware.get('PRODUCT_MODEL', 'unknown')}"
            rows.append(CheckResult("OK", subject, detail))
        except CameraError as exc:
            rows.append(CheckResult("FAIL", subject, str(exc)))
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
    run.set_defaults(func=cmd_run)
    check = sub.add_parser("check", help="validate the config and reach mediamtx and every camera")
    check.add_argument("-c", "--config", required=True)
    check.add_argument("--show-webhooks", action="store_true", help="print each camera's WEBHOOK_URL (a secret)")
    check.set_defaults(func=cmd_check)
    demo = sub.add_parser("demo", help="run on simulated cameras and a mediamtx stand-in, on 127.0.0.1")
    demo.add_argument("-p", "--port", type=int, default=8080)
    demo.set_defaults(func=cmd_demo)
    mtx = sub.add_parser("mediamtx-config", help="print the mediamtx.yml settings the relay needs")
    mtx.add_argument("-c", "--config", required=True)
    mtx.set_defaults(func=cmd_mediamtx_config)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Console script entry point."""
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
