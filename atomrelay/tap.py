"""twistd entry: ``Options`` and ``makeService`` (the relay is built by ``atomrelay.wiring``)."""

from __future__ import annotations

from atomrelay import tls

# Before the imports below load Twisted's networking: without pyOpenSSL (see atomrelay.tls).
tls.import_twisted_without_tls()

from typing import Any, cast

from twisted.application.service import IService, MultiService
from twisted.python import usage

from atomrelay.config import ConfigError, load_config
from atomrelay.relay import Listener, relay_status
from atomrelay.systemd import SystemdNotifier, observed
from atomrelay.wiring import build_relay


class Options(usage.Options):
    """Command-line options of ``twistd atomrelay`` and ``atomrelay run``."""

    synopsis = "-c CONFIG"
    optParameters = [
        ["config", "c", "/etc/atomrelay/config.yaml", "Path to the YAML configuration file."],
    ]
    optFlags = [
        ["access-log", None, "Log one line per HTTP request (off by default: it costs CPU on every request)."],
    ]

    def postOptions(self) -> None:
        """Load and validate the config now so that twistd refuses to start on errors."""
        try:
            self["loaded"] = load_config(self["config"])
        except ConfigError as exc:
            raise usage.UsageError(str(exc)) from None


def makeService(options: usage.Options) -> IService:
    """Build the relay service from parsed ``Options`` (twistd calls this)."""
    from twisted.internet import reactor

    config = options["loaded"] if "loaded" in options else load_config(options["config"])
    try:
        relay = build_relay(config, reactor, config_path=options["config"], access_log=bool(options["access-log"]))
    except ConfigError as exc:  # the state directory: one line, as for the config, not a traceback
        raise SystemExit(f"atomrelay: {exc}") from None
    listeners = [svc for svc in relay if isinstance(svc, Listener)]
    notifier = SystemdNotifier(
        reactor,
        ready=lambda: [*(listener.bind() for listener in listeners), observed(relay.reconciler.ready)],
        status=lambda: relay_status(relay.config, relay),
    )
    relay.on_reloading.append(notifier.reloading)
    relay.on_reloaded.append(lambda outcome: notifier.reloaded())
    top: Any = cast(Any, MultiService)()
    cast(Any, relay).setServiceParent(top)
    # After the relay: READY once every listener listens and paths are registered; stops
    # first (STOPPING=1). Outside the relay so SystemReboot's restart never says STOPPING.
    cast(Any, notifier).setServiceParent(top)
    return cast(IService, top)
