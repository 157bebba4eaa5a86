"""A headless Debian ``chromium`` driven over the Chrome DevTools protocol on a pipe (no WebSocket).

``--remote-debugging-pipe`` makes the browser read commands on its fd 3 and write answers
and events on its fd 4, each a JSON message ended by a NUL byte; the reactor's
``spawnProcess`` maps those descriptors, so the browser and the relay under test share
the reactor. ``Browser.open`` answers HTTP authentication challenges (Digest included)
with the given credentials through the Fetch domain, and records console errors and
uncaught exceptions.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

from twisted.internet import reactor
from twisted.internet.defer import Deferred
from twisted.internet.protocol import ProcessProtocol
from twisted.python.failure import Failure

CHROMIUM_FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-default-browser-check", "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio",
    # Nothing the page or the browser asks for leaves the host: only loopback names resolve, and
    # every other request goes to a proxy address where nothing listens (loopback is never proxied).
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
    "--proxy-server=http://127.0.0.1:9",
    "--remote-debugging-pipe",
)


def chromium() -> str:
    """The chromium executable (``make system-deps`` installs Debian's)."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path is not None, "chromium is not installed: run `make system-deps`"
    return path


class DevTools(ProcessProtocol):
    """The browser process and its protocol pipe."""

    def __init__(self) -> None:
        self._buffer = b""
        self._next_id = 0
        self._pending: dict[int, Deferred[dict[str, Any]]] = {}
        self.handlers: dict[str, Callable[[dict[str, Any], str | None], None]] = {}
        self.stderr = b""
        self.ended: Deferred[None] = Deferred()
        self.problems: list[str] = []
        """Console errors, uncaught exceptions and failed loads reported by the page."""

    def childDataReceived(self, fd: int, data: bytes) -> None:
        """Protocol messages on fd 4; keep the end of the browser's own output for error messages."""
        if fd != 4:
            self.stderr = (self.stderr + data)[-20000:]
            return
        self._buffer += data
        while b"\0" in self._buffer:
            raw, _, self._buffer = self._buffer.partition(b"\0")
            self._message(json.loads(raw))

    def _message(self, message: dict[str, Any]) -> None:
        if "id" in message:
            waiter = self._pending.pop(message["id"])
            if "error" in message:
                waiter.errback(AssertionError(f"DevTools error: {message['error']}"))
            else:
                waiter.callback(message.get("result", {}))
            return
        handler = self.handlers.get(message.get("method", ""))
        if handler is not None:
            handler(message.get("params", {}), message.get("sessionId"))

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None
             ) -> Deferred[dict[str, Any]]:
        """Send one command; the Deferred fires with its result."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        waiter: Deferred[dict[str, Any]] = Deferred()
        self._pending[self._next_id] = waiter
        transport: Any = self.transport
        transport.writeToChild(3, json.dumps(message).encode("utf-8") + b"\0")
        return waiter

    def processEnded(self, reason: Failure) -> None:
        """Fail whatever still waits for an answer."""
        for waiter in self._pending.values():
            waiter.errback(AssertionError("the browser exited: " + self.stderr.decode("utf-8", "replace")[-2000:]))
        self._pending.clear()
        self.ended.callback(None)


class Browser:
    """One headless chromium with a fresh profile under ``profile``."""

    def __init__(self, profile: Path) -> None:
        self.tools = DevTools()
        args = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "about:blank"]
        self.process: Any = reactor.spawnProcess(  # type: ignore[attr-defined]
            self.tools, args[0], args, env={"HOME": str(profile)}, childFDs={0: "w", 1: "r", 2: "r", 3: "w", 4: "r"},
        )

    async def open(self, url: str, username: str, password: str, width: int, height: int) -> str:
        """A new tab of ``width`` x ``height`` CSS pixels loading ``url``; its DevTools session id."""
        tools = self.tools
        target = await tools.send("Target.createTarget", {"url": "about:blank"})
        attached = await tools.send("Target.attachToTarget", {"targetId": target["targetId"], "flatten": True})
        session: str = attached["sessionId"]

        def paused(params: dict[str, Any], sid: str | None) -> None:
            tools.send("Fetch.continueRequest", {"requestId": params["requestId"]}, sid)

        def auth(params: dict[str, Any], sid: str | None) -> None:
            answer = {"response": "ProvideCredentials", "username": username, "password": password}
            tools.send("Fetch.continueWithAuth", {"requestId": params["requestId"], "authChallengeResponse": answer},
                       sid)

        def exception(params: dict[str, Any], sid: str | None) -> None:
            tools.problems.append("exception: " + json.dumps(params.get("exceptionDetails", {}))[:500])

        def console(params: dict[str, Any], sid: str | None) -> None:
            if params.get("type") in ("error", "assert"):
                tools.problems.append("console: " + json.dumps(params.get("args", []))[:500])

        def log_entry(params: dict[str, Any], sid: str | None) -> None:
            entry = params.get("entry", {})
            if entry.get("level") == "error":
                tools.problems.append(f"log: {entry.get('text')} {entry.get('url', '')}")

        tools.handlers.update({"Fetch.requestPaused": paused, "Fetch.authRequired": auth,
                               "Runtime.exceptionThrown": exception, "Runtime.consoleAPICalled": console,
                               "Log.entryAdded": log_entry})
        await tools.send("Fetch.enable", {"handleAuthRequests": True, "patterns": [{"urlPattern": "*"}]}, session)
        for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
            await tools.send(domain, {}, session)
        await tools.send("Emulation.setDeviceMetricsOverride",
                         {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 600}, session)
        await tools.send("Page.navigate", {"url": url}, session)
        return session

    async def evaluate(self, session: str, expression: str) -> Any:
        """The value of a JavaScript expression in the page (a promise's value once it settles)."""
        params = {"expression": expression, "returnByValue": True, "awaitPromise": True}
        result = await self.tools.send("Runtime.evaluate", params, session)
        assert "exceptionDetails" not in result, result["exceptionDetails"]
        return result["result"].get("value")

    async def close(self) -> None:
        """Ask the browser to quit and wait for it (killing it if it does not)."""
        if not self.tools.ended.called:
            try:
                await self.tools.send("Browser.close")
            except AssertionError:
                pass
            timer = reactor.callLater(10, self._kill)  # type: ignore[attr-defined]
            await self.tools.ended
            if timer.active():
                timer.cancel()

    def _kill(self) -> None:
        try:
            self.process.signalProcess("KILL")
        except Exception:  # noqa: BLE001 - already gone
            pass
