"""The benchmarks' simulator process: N simulated ATOM Cams and the fake mediamtx on 127.0.0.1.

Started by ``common.Simulators``. Prints one JSON line with its ports, then answers one
JSON line per command read from stdin:

=======================  ==========================================================
command                  answer
=======================  ==========================================================
``paths``                ``{"paths": <API paths configured in the fake mediamtx>}``
``restart N``            restarts the fake mediamtx (API paths gone), then waits
                         until N paths are back: ``{"seconds": <restart -> N paths>}``
                         (``null`` after 10 s)
``snapshots``            ``{"snapshots": <get_jpeg.cgi requests summed over cameras>}``
``snapshot_delay S``     every camera takes S seconds per snapshot: ``{"ok": true}``
``quit``                 stops the reactor
=======================  ==========================================================

Each camera also gets a TCP port that answers RTSP ``OPTIONS``, so the relay's health
monitor finds it online.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.internet import stdio
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import LoopingCall
from twisted.protocols.basic import LineReceiver

from atomrelay.sim.camera import SimulatedCamera, listen_camera
from atomrelay.sim.mediamtx import FakeMediamtx, listen_mediamtx

reactor: Any = _reactor
RESTART_DEADLINE = 10.0
POLL = 0.002


class RtspOptions(Protocol):
    """Answers every complete RTSP request with ``200 OK`` (enough for the relay's OPTIONS probe)."""

    def __init__(self) -> None:
        self.buffer = b""

    def dataReceived(self, data: bytes) -> None:
        """Answer each request once its header block is complete."""
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            cseq = next((line.split(b":", 1)[1].strip() for line in head.split(b"\r\n")
                         if line.lower().startswith(b"cseq:")), b"1")
            cast(Any, self.transport).write(b"RTSP/1.0 200 OK\r\nCSeq: " + cseq + b"\r\nPublic: OPTIONS, DESCRIBE\r\n\r\n")


class Control(LineReceiver):
    """The stdin/stdout command channel (see the module docstring)."""

    delimiter = b"\n"

    def __init__(self, fake: FakeMediamtx, cameras: list[SimulatedCamera]) -> None:
        self.fake = fake
        self.cameras = cameras

    def connectionLost(self, reason: object = None) -> None:
        """stdin closed: the benchmark driver is gone, so stop."""
        if reactor.running:
            reactor.stop()

    def lineReceived(self, line: bytes) -> None:
        """Run one command."""
        words = line.decode("ascii").split()
        if not words:
            return
        command, args = words[0], words[1:]
        if command == "paths":
            self.answer({"paths": len(self.fake.paths)})
        elif command == "restart":
            self.restart(int(args[0]))
        elif command == "snapshots":
            self.answer({"snapshots": sum(camera.snapshot_requests for camera in self.cameras)})
        elif command == "snapshot_delay":
            for camera in self.cameras:
                camera.snapshot_delay = float(args[0])
            self.answer({"ok": True})
        elif command == "quit":
            reactor.stop()
        else:
            self.answer({"error": f"unknown command {command}"})

    def restart(self, wanted: int) -> None:
        """Restart the fake mediamtx and time how long the relay takes to put ``wanted`` paths back."""
        self.fake.restart()
        start = time.perf_counter()

        def check() -> None:
            elapsed = time.perf_counter() - start
            if len(self.fake.paths) >= wanted:
                loop.stop()
                self.answer({"seconds": elapsed})
            elif elapsed > RESTART_DEADLINE:
                loop.stop()
                self.answer({"seconds": None})

        loop = LoopingCall(check)
        loop.start(POLL, now=False)

    def answer(self, payload: dict[str, Any]) -> None:
        """One JSON line on stdout."""
        self.sendLine(json.dumps(payload).encode("ascii"))  # type: ignore[no-untyped-call]


def main() -> None:
    """Listen, print the ports, serve commands until ``quit`` or stdin closes."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cameras", type=int, default=16)
    args = parser.parse_args()
    fake = FakeMediamtx(reactor)
    api: Any = listen_mediamtx(reactor, fake)
    cameras = []
    ports = []
    for index in range(args.cameras):
        camera = SimulatedCamera(reactor, "ATOM_CamV3C", hostname=f"cam{index:02d}", hwaddr=f"02:00:00:00:01:{index:02x}")
        http: Any = listen_camera(reactor, camera)
        rtsp: Any = reactor.listenTCP(0, Factory.forProtocol(RtspOptions), interface="127.0.0.1")
        cameras.append(camera)
        ports.append({"http": http.getHost().port, "rtsp": rtsp.getHost().port})
    control = Control(fake, cameras)
    cast(Any, stdio.StandardIO)(control)
    control.answer({"api_port": api.getHost().port, "cameras": ports})
    reactor.run()


if __name__ == "__main__":
    main()
