"""Shared pieces of the benchmarks: simulator and relay processes, SOAP requests, wrk, RSS.

Everything runs on 127.0.0.1. The relay is the real thing (``.venv/bin/atomrelay run -c
FILE``) against the simulators of ``benchmarks/sims.py`` in their own process. On a
multi-core machine the server under test (relay or bare server) is pinned to the last
CPU and the load generator, simulators and this driver to the others, so that they do
not take turns on one core.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import math
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Sequence

from lxml import etree
from lxml.builder import ElementMaker  # type: ignore[import-not-found, unused-ignore]

from atomrelay.xml import ns

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
ATOMRELAY = BIN / "atomrelay"
PYTHON = sys.executable
LUA = HERE / "requests.lua"

USER = "admin"
PASSWORD = "bench-pa55w0rd"
WEBHOOK_TOKEN = "bench-webhook-token-0123456789"
SOAP_TYPE = "application/soap+xml; charset=utf-8"

CPUS = sorted(os.sched_getaffinity(0))
SERVER_CPUS = {CPUS[-1]}
CLIENT_CPUS = set(CPUS[:-1]) or set(CPUS)


def pin_clients() -> None:
    """Pin this driver (and so the processes it starts, unless told otherwise) to the client CPUs."""
    os.sched_setaffinity(0, CLIENT_CPUS)


def _pin_server() -> None:
    os.sched_setaffinity(0, SERVER_CPUS)


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process ``pid`` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env() -> dict[str, str]:
    """Environment for child processes: this venv first on PATH, unbuffered output."""
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("NOTIFY_SOCKET", None)
    return env


# --- simulators --------------------------------------------------------------------------------


@dataclass
class CameraPorts:
    """Where one simulated camera listens."""

    http: int
    rtsp: int


class Simulators:
    """``benchmarks/sims.py`` in a child process: N cameras and the fake mediamtx."""

    def __init__(self, cameras: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "sims.py"), "--cameras", str(cameras)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env(), text=True, cwd=ROOT,
        )
        ready = self._read()
        self.api_port: int = ready["api_port"]
        self.cameras = [CameraPorts(c["http"], c["rtsp"]) for c in ready["cameras"]]

    def _read(self) -> dict[str, Any]:
        stdout = self.process.stdout
        assert stdout is not None
        line = stdout.readline()
        if not line:
            raise RuntimeError("the simulator process exited")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def command(self, text: str) -> dict[str, Any]:
        """Send one command line; return its JSON answer."""
        stdin = self.process.stdin
        assert stdin is not None
        stdin.write(text + "\n")
        stdin.flush()
        return self._read()

    def close(self) -> None:
        """Stop the process."""
        stdin = self.process.stdin
        if stdin is not None:
            stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> Simulators:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def camera_id(index: int) -> str:
    """The id of the ``index``-th benchmark camera."""
    return f"cam{index:02d}"


def write_config(path: Path, sims: Simulators, cameras: int, port: int, state_dir: Path,
                 poll_interval: str = "2s", max_clock_skew: str = "5m") -> Path:
    """A relay config for the first ``cameras`` simulated cameras, two H.264 streams each.

    ``main`` (1080p, audio transcoded) and ``sub`` (360p, no audio) are both H.264, so
    every stream is a Media1 profile: GetProfiles lists 2 profiles per camera.
    """
    if cameras > len(sims.cameras):
        raise ValueError(f"{cameras} cameras wanted, the simulators have {len(sims.cameras)}")
    lines = [
        "onvif:",
        "  bind: 127.0.0.1",
        f"  port: {port}",
        f"  max_clock_skew: {max_clock_skew}",
        f"  users: [{{username: {USER}, password: {PASSWORD}, role: Administrator}}]",
        "discovery: {enabled: false}",
        "mediamtx:",
        f"  api_url: http://127.0.0.1:{sims.api_port}",
        f"  poll_interval: {poll_interval}",
        "  wait_timeout: 10s",
        f"state_dir: {state_dir}",
        "cameras:",
    ]
    for index, ports in enumerate(sims.cameras[:cameras]):
        lines += [
            f"  - id: {camera_id(index)}",
            f"    name: Camera {index}",
            "    host: 127.0.0.1",
            f"    http_port: {ports.http}",
            f"    rtsp_port: {ports.rtsp}",
            "    model: auto",
            f"    webhook_token: {WEBHOOK_TOKEN}",
            "    streams:",
            "      - {name: main, rtsp_path: video0_unicast, codec: h264, audio: transcode}",
            "      - {name: sub, rtsp_path: video1_unicast, codec: h264, audio: none, width: 640, height: 360,"
            " bitrate: 512}",
        ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


# --- the relay and other servers under test -------------------------------------------------------


class Server:
    """A server process under test (pinned to the server CPU), its log in a file."""

    def __init__(self, argv: Sequence[str], port: int, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = port
        self.log = log
        self.started = time.perf_counter()
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                list(argv), stdout=out, stderr=subprocess.STDOUT, env=env or child_env(), cwd=ROOT,
                preexec_fn=_pin_server,
            )

    @property
    def pid(self) -> int:
        """The process id."""
        return self.process.pid

    def wait_answering(self, timeout: float = 20.0) -> float:
        """Wait until GetSystemDateAndTime on ``/onvif/device_service`` answers 200; seconds since start."""
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}; see {self.log}")
            try:
                status, _ = post_once(self.port, "/onvif/device_service", get_system_date_and_time())
                if status == 200:
                    return time.perf_counter() - self.started
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not answering after {timeout}s; see {self.log}")
            time.sleep(0.005)

    def rss_kib(self) -> int:
        """Resident set size now (KiB)."""
        return rss_kib(self.pid)

    def stop(self) -> int:
        """SIGTERM, then wait; the exit status."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return int(self.process.returncode)

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def relay(config: Path, port: int, log: Path, argv: Sequence[str] | None = None,
          env: dict[str, str] | None = None, options: Sequence[str] = ()) -> Server:
    """Start ``atomrelay run [options] -c config`` (or ``argv`` + ``run [options] -c config``)."""
    command = list(argv) if argv is not None else [str(ATOMRELAY)]
    return Server([*command, "run", *options, "-c", str(config)], port, log, env)


def bare_server(body_file: Path, port: int, log: Path, stock: bool = False) -> Server:
    """Start ``benchmarks/bare_server.py`` answering every POST with the bytes of ``body_file``."""
    argv = [sys.executable, str(HERE / "bare_server.py"), "--port", str(port), "--body", str(body_file)]
    return Server([*argv, "--stock"] if stock else argv, port, log)


def rss_kib(pid: int) -> int:
    """VmRSS of a process (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# --- SOAP requests ------------------------------------------------------------------------------

_S = ElementMaker(namespace=ns.SOAP12, nsmap={"s": ns.SOAP12})
_SEC = ElementMaker(namespace=ns.WSSE, nsmap={"wsse": ns.WSSE, "wsu": ns.WSU})
_WSU = ElementMaker(namespace=ns.WSU, nsmap={"wsu": ns.WSU})
_BASE64 = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-soap-message-security-1.0#Base64Binary"


def operation(namespace: str, name: str, **children: str) -> etree._Element:
    """``<name xmlns=namespace><child>text</child>...</name>``."""
    maker = ElementMaker(namespace=namespace, nsmap={None: namespace})
    return maker(name, *(maker(child, text) for child, text in children.items()))  # type: ignore[no-any-return]


def get_system_date_and_time() -> bytes:
    """An unauthenticated GetSystemDateAndTime request."""
    return envelope(operation(ns.TDS, "GetSystemDateAndTime"))


def envelope(body: etree._Element, header: etree._Element | None = None) -> bytes:
    """A SOAP 1.2 envelope around ``body`` (and ``header`` blocks), on one line."""
    parts = [_S.Header(header)] if header is not None else []
    return etree.tostring(_S.Envelope(*parts, _S.Body(body)))


class SignedRequests:
    """Copies of one request, each with a fresh WS-Security UsernameToken (PasswordDigest).

    Every copy has its own random 16-byte nonce and a Created of now, so each is
    accepted once within the relay's clock skew window.
    """

    def __init__(self, body: etree._Element, username: str = USER, password: str = PASSWORD) -> None:
        self._password = password.encode("utf-8")
        self._digest = _SEC.Password(Type=ns.PASSWORD_DIGEST)
        self._nonce = _SEC.Nonce(EncodingType=_BASE64)
        self._created = _WSU.Created()
        token = _SEC.UsernameToken(_SEC.Username(username), self._digest, self._nonce, self._created)
        self._envelope = _S.Envelope(_S.Header(_SEC.Security(token)), _S.Body(body))

    def make(self, now: float | None = None) -> bytes:
        """One request with a new nonce, Created at ``now`` (default: the current time)."""
        nonce = os.urandom(16)
        moment = datetime.fromtimestamp(time.time() if now is None else now, timezone.utc)
        created = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        digest = hashlib.sha1(nonce + created.encode("ascii") + self._password).digest()
        self._digest.text = base64.b64encode(digest).decode("ascii")
        self._nonce.text = base64.b64encode(nonce).decode("ascii")
        self._created.text = created
        return etree.tostring(self._envelope)


def write_request_lines(path: Path, requests: Iterable[tuple[str, bytes]]) -> int:
    """Write ``(path, body)`` pairs in the format of ``requests.lua``; the count."""
    count = 0
    with open(path, "wb") as out:
        for url_path, body in requests:
            if b"\n" in body or b"\t" in url_path.encode():
                raise ValueError("request bodies must be on one line")
            out.write(url_path.encode("ascii") + b"\t" + body + b"\n")
            count += 1
    return count


# --- HTTP clients -----------------------------------------------------------------------------------


def post_once(port: int, path: str, body: bytes, content_type: str = SOAP_TYPE,
              timeout: float = 10.0) -> tuple[int, bytes]:
    """One POST on a new connection: (status, body)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        connection.request("POST", path, body, {"Content-Type": content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


class DigestClient:
    """A keep-alive HTTP client that answers the relay's Digest (MD5) challenge with its own nonce."""

    def __init__(self, port: int, username: str = USER, password: str = PASSWORD, timeout: float = 10.0) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
        self.username = username
        self.password = password
        self.challenge: dict[str, str] | None = None
        self.count = 0
        self.cnonce = os.urandom(8).hex()

    def get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` with Digest credentials (fetching a challenge first if needed)."""
        for _ in range(2):
            headers = {} if self.challenge is None else {"Authorization": self._authorization("GET", path)}
            self.connection.request("GET", path, headers=headers)
            response = self.connection.getresponse()
            body = response.read()
            if response.status != 401:
                return response.status, body
            self.challenge = _parse_challenge(response.getheader("www-authenticate") or "")
            self.count = 0
        return 401, body

    def _authorization(self, method: str, uri: str) -> str:
        assert self.challenge is not None
        self.count += 1
        nc = f"{self.count:08x}"

        def h(text: str) -> str:
            return hashlib.md5(text.encode("utf-8")).hexdigest()

        realm, nonce = self.challenge["realm"], self.challenge["nonce"]
        ha1 = h(f"{self.username}:{realm}:{self.password}")
        ha2 = h(f"{method}:{uri}")
        answer = h(f"{ha1}:{nonce}:{nc}:{self.cnonce}:auth:{ha2}")
        return (
            f'Digest username="{self.username}", realm="{realm}", nonce="{nonce}", uri="{uri}", '
            f'algorithm=MD5, qop=auth, nc={nc}, cnonce="{self.cnonce}", response="{answer}", '
            f'opaque="{self.challenge.get("opaque", "")}"'
        )

    def close(self) -> None:
        """Close the connection."""
        self.connection.close()


def _parse_challenge(header: str) -> dict[str, str]:
    """The parameters of the first Digest challenge in a (comma-joined) WWW-Authenticate value."""
    text = header.split("Digest ", 1)[1].split(", Digest ", 1)[0].split(", Basic ", 1)[0]
    params = {}
    for part in text.split(","):
        key, _, value = part.strip().partition("=")
        params[key.lower()] = value.strip('"')
    return params


# --- wrk ------------------------------------------------------------------------------------------------


@dataclass
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    errors: int
    """Connect, read, write and timeout errors plus non-2xx/3xx answers."""
    wrapped: int
    latency_ms: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Requests per second."""
        return self.requests / self.seconds


def run_wrk(port: int, requests_file: Path, connections: int, duration: float, limit: int = 0,
            threads: int = 1, content_type: str = SOAP_TYPE) -> WrkResult:
    """Run wrk against 127.0.0.1:port with ``requests.lua`` over ``requests_file``."""
    env = child_env()
    env.update(BENCH_REQUESTS=str(requests_file), BENCH_THREADS=str(threads), BENCH_LIMIT=str(limit),
               BENCH_CONTENT_TYPE=content_type)
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{math.ceil(duration)}s", "--timeout", "10s",
            "-s", str(LUA), f"http://127.0.0.1:{port}/"]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=True)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("BENCH_JSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    raw = json.loads(line[len("BENCH_JSON "):])
    errors = sum(raw[key] for key in ("connect_errors", "read_errors", "write_errors", "status_errors", "timeouts"))
    latency = {key: value / 1000.0 for key, value in raw["latency_us"].items()}
    return WrkResult(raw["requests"], raw["duration_us"] / 1e6, errors, raw["wrapped"], latency)


def run_wrk_count(port: int, requests: Callable[[int], Iterable[tuple[str, bytes]]], count: int, connections: int,
                  workdir: Path, chunk_seconds: float = 3.0, chunk_requests: int = 40_000) -> WrkResult:
    """Send ``count`` requests made by ``requests(n)`` in wrk runs of ``chunk_seconds``; the summed result.

    wrk has no request count, only a duration: each run gets fresh requests and stops its
    thread after the ones still owed, then idles for the rest of its duration. So the
    rate (``seconds``) and latencies are those of the runs that did not stop early (of
    the last run if all did).
    """
    lines = workdir / "counted.txt"
    total = errors = wrapped = 0
    full: list[WrkResult] = []
    last: WrkResult | None = None
    while total < count:
        owed = count - total
        seconds = chunk_seconds
        if full:
            expected = sum(r.requests for r in full) / sum(r.seconds for r in full)
            seconds = min(chunk_seconds, max(1.0, math.ceil(1.2 * owed / expected)))
        write_request_lines(lines, requests(min(owed, chunk_requests)))
        last = run_wrk(port, lines, connections, seconds, limit=owed)
        if last.requests == 0:
            raise RuntimeError("wrk completed no request")
        total += last.requests
        errors += last.errors
        wrapped += last.wrapped
        if last.requests < owed:
            full.append(last)
    assert last is not None
    timed = full or [last]
    rate = sum(r.requests for r in timed) / sum(r.seconds for r in timed)
    return WrkResult(total, total / rate, errors, wrapped, timed[0].latency_ms)


# --- figures ------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` percentile (0..1) by nearest rank."""
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(fraction * len(ordered) + 0.5)) - 1))
    return ordered[rank]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99 and max of durations given in seconds, in milliseconds."""
    return {
        "p50": percentile(seconds, 0.50) * 1000,
        "p90": percentile(seconds, 0.90) * 1000,
        "p99": percentile(seconds, 0.99) * 1000,
        "max": max(seconds) * 1000,
        "mean": statistics.fmean(seconds) * 1000,
    }


def machine() -> dict[str, str]:
    """What the figures were measured on."""
    model = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    os_name = "Linux"
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = line.split("=", 1)[1].strip('"')
    wrk = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.splitlines()
    from importlib.metadata import version

    return {
        "cpu": f"{os.cpu_count()} x {model}",
        "memory": f"{int(memory) / 1024 / 1024:.1f} GiB",
        "os": f"{os_name}, kernel {platform.release()}",
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "twisted": version("twisted"),
        "lxml": version("lxml"),
        "atomrelay": version("atomrelay"),
        "wrk": wrk[0].split(" [")[0] if wrk else "wrk",
        "pinning": f"server on CPU {sorted(SERVER_CPUS)}, clients on CPU {sorted(CLIENT_CPUS)}",
    }


def save(result: dict[str, Any], path: str | None) -> None:
    """Print ``result`` as JSON, and write it to ``path`` when given."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.005) -> float:
    """Poll ``condition`` until true; seconds waited. RuntimeError after ``timeout``."""
    start = time.perf_counter()
    while not condition():
        if time.perf_counter() - start > timeout:
            raise RuntimeError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
    return time.perf_counter() - start


def stderr(text: str, stream: IO[str] = sys.stderr) -> None:
    """Progress output (stdout carries the JSON result)."""
    print(text, file=stream, flush=True)
