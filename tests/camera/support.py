"""A test bench: simulated cameras behind StubTreq, all on one twisted.internet.task.Clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

from treq.testing import StubTreq
from twisted.internet.defer import Deferred, ensureDeferred
from twisted.internet.task import Clock

from atomrelay.camera.client import CameraClient
from atomrelay.config import CameraConfig, StreamConfig
from atomrelay.sim.camera import SimulatedCamera

SWING = "ATOM_CAKP1JZJP"
CAM2 = "ATOM_CamV3C"
START = 1_700_000_000.0
STREAMS = (StreamConfig("main", "video0_unicast"), StreamConfig("sub", "video1_unicast", codec="h265"))


def camera_config(camera_id: str = "swing", model: str = "auto", **changes: Any) -> CameraConfig:
    """A camera on 127.0.0.1 with a main and a sub stream."""
    settings: dict[str, Any] = {"name": f"{camera_id} cam", "host": "127.0.0.1", "streams": STREAMS, "model": model,
                                **changes}
    return CameraConfig(id=camera_id, **settings)


@dataclass
class Bench:
    """Simulated cameras and the clients that talk to them, on one Clock."""

    clock: Clock = field(default_factory=Clock)
    stubs: list[StubTreq] = field(default_factory=list)
    sims: dict[str, SimulatedCamera] = field(default_factory=dict)
    clients: dict[str, CameraClient] = field(default_factory=dict)
    cameras: dict[str, CameraConfig] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.clock.seconds() == 0:
            self.clock.advance(START)

    def add(self, camera: CameraConfig, product_model: str = SWING, **sim_options: Any) -> SimulatedCamera:
        """Simulate ``camera`` as a ``product_model`` and make its CameraClient (timeouts on the Clock)."""
        sim = SimulatedCamera(self.clock, product_model, hostname=camera.id, **sim_options)
        stub = StubTreq(sim)
        self.stubs.append(stub)
        self.sims[camera.id] = sim
        self.cameras[camera.id] = camera
        self.clients[camera.id] = CameraClient(stub, camera, timeout=5.0, clock=self.clock)
        return sim

    def flush(self) -> None:
        """Deliver everything the fake connections hold."""
        for _ in range(3):
            for stub in self.stubs:
                stub.flush()

    def pump(self, seconds: float = 0.0, step: float = 0.05) -> None:
        """Let ``seconds`` pass on the Clock in small steps, delivering replies as they come."""
        self.flush()
        end = self.clock.seconds() + seconds
        while self.clock.seconds() < end - 1e-9:
            self.clock.advance(min(step, end - self.clock.seconds()))
            self.flush()

    def wait(self, work: Awaitable[Any] | Deferred[Any], limit: float = 120.0, step: float = 0.05) -> Any:
        """Pump until ``work`` is done (at most ``limit`` Clock seconds) and return its result or raise its error."""
        deferred = work if isinstance(work, Deferred) else ensureDeferred(work)
        results: list[Any] = []
        deferred.addBoth(results.append)
        end = self.clock.seconds() + limit
        self.flush()
        while not results and self.clock.seconds() < end:
            self.clock.advance(step)
            self.flush()
        assert results, f"not done after {limit} Clock seconds"
        result = results[0]
        if hasattr(result, "raiseException"):
            result.raiseException()
        return result

    def until(self, condition: Callable[[], bool], limit: float = 120.0, step: float = 0.05) -> float:
        """Pump until ``condition()`` holds; return how many Clock seconds that took."""
        start = self.clock.seconds()
        self.flush()
        while not condition():
            assert self.clock.seconds() - start < limit, f"condition not met within {limit} Clock seconds"
            self.clock.advance(step)
            self.flush()
        return self.clock.seconds() - start
