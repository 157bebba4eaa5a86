"""Which camera model each configured camera is, and what that model can do.

``cameras[].model`` names the model, or is ``auto``: then the relay reads
``PRODUCT_MODEL`` (and ``HWADDR``, a stable hardware id) from the camera's
``hack_ini.cgi`` - only those two keys, the rest of that file holds secrets. What was
read is kept in ``state_dir`` (``camera-hardware.json``), so a camera that is offline
when the relay starts keeps its PTZ ability and identity; a camera never read yet is
retried every ``retry_interval`` until it answers, and every ``auto`` camera is read
once per run so that a replaced camera is noticed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Awaitable, Callable, Mapping, Protocol, Sequence

from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from atomrelay.camera.client import CameraError
from atomrelay.config import CameraConfig
from atomrelay.periodic import PeriodicService
from atomrelay.state import StateStore

STATE_NAME = "camera-hardware"

_SIXTEEN_NINE_DIAGONAL = math.hypot(16, 9)


def _fov_from_diagonal(diagonal: float) -> tuple[float, float]:
    """Horizontal and vertical FOV of a 16:9 picture from its diagonal FOV.

    The cameras' wide lenses are close to equidistant (f-theta): the angle from the
    centre grows linearly with the distance in the picture, which is also what the
    ONVIF FOV translation space assumes. So the angles scale with the sides.
    """
    return (round(diagonal * 16 / _SIXTEEN_NINE_DIAGONAL, 1), round(diagonal * 9 / _SIXTEEN_NINE_DIAGONAL, 1))


def _fov_from_horizontal(horizontal: float) -> tuple[float, float]:
    """Horizontal and vertical FOV of a 16:9 picture from its horizontal FOV (equidistant lens, as above)."""
    return (horizontal, round(horizontal * 9 / 16, 1))


@dataclass(frozen=True)
class ModelFacts:
    """What one ``PRODUCT_MODEL`` can do: motors and their ranges, and the lens's field of view."""

    product_model: str
    product: str
    ptz: bool
    fov: tuple[float, float]
    """Default (horizontal, vertical) field of view in degrees; ``cameras[].fov`` overrides it."""
    pan_range: tuple[float, float] = (0.0, 0.0)
    """Motor pan limits in degrees (the ``move`` command's range)."""
    tilt_range: tuple[float, float] = (0.0, 0.0)
    """Motor tilt limits in degrees."""


MODELS: dict[str, ModelFacts] = {
    facts.product_model: facts
    for facts in (
        # ATOM Cam, ATOM tech product specification ("視野角 110°", diagonal):
        # https://www.atomtech.co.jp/atomcam/ (spec table).
        ModelFacts("AC1", "ATOM Cam", False, _fov_from_diagonal(110.0)),
        # ATOM Cam 2, ATOM tech product specification ("視野角 120°", diagonal):
        # https://www.atomtech.co.jp/atomcam2/ (spec table).
        ModelFacts("ATOM_CamV3C", "ATOM Cam 2", False, _fov_from_diagonal(120.0)),
        # ATOM Cam Swing, ATOM tech product specification ("視野角 水平 108°", pan 0-355°
        # and tilt 0-180° motor range): https://www.atomtech.co.jp/atomcamswing/ (spec
        # table). The motor range is also what atomcam_tools' `move` command accepts.
        ModelFacts("ATOM_CAKP1JZJP", "ATOM Cam Swing", True, _fov_from_horizontal(108.0), (0.0, 355.0), (0.0, 180.0)),
        # Wyze Cam v3, Wyze product specification ("130° diagonal field of view"):
        # https://www.wyze.com/products/wyze-cam-v3 (Tech specs).
        ModelFacts("WYZE_CAKP2JFUS", "Wyze Cam v3", False, _fov_from_diagonal(130.0)),
    )
}
"""Every model the atomcam_tools firmware reports; only the Swing has motors."""


def facts_for(product_model: str) -> ModelFacts:
    """The facts of a ``PRODUCT_MODEL``; an unknown model is a fixed camera with the ATOM Cam 2's lens."""
    known = MODELS.get(product_model)
    if known is not None:
        return known
    return ModelFacts(product_model, product_model, False, MODELS["ATOM_CamV3C"].fov)


@dataclass(frozen=True)
class CameraHardware:
    """What ``hack_ini.cgi`` said about one camera (None: not read yet)."""

    product_model: str | None = None
    hwaddr: str | None = None


class HardwareSource(Protocol):
    """The part of ``CameraClient`` the registry uses."""

    def hardware(self, timeout: float | None = None) -> Awaitable[dict[str, str]]: ...


class ModelRegistry(PeriodicService):
    """Knows every configured camera's model: from the config, the saved state or the camera itself.

    ``on_change`` callbacks get ``(camera_id, facts)`` whenever a camera's model
    becomes known or changes (a Media service caching profiles listens to it, since a
    Swing's profiles carry a PTZConfiguration).
    """

    log = Logger()
    what = "camera model loop"

    def __init__(
        self,
        clock: IReactorTime,
        cameras: Sequence[CameraConfig],
        clients: Mapping[str, HardwareSource],
        store: StateStore,
        retry_interval: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        super().__init__(clock, retry_interval)
        self._cameras = {camera.id: camera for camera in cameras}
        self._clients = clients
        self._store = store
        self._timeout = timeout
        self.on_change: list[Callable[[str, ModelFacts | None], None]] = []
        self._hardware: dict[str, CameraHardware] = {}
        self._verified: set[str] = set()
        self._reported: set[str] = set()
        saved = store.load(STATE_NAME, {})
        saved = saved if isinstance(saved, dict) else {}
        for camera_id, entry in saved.items():
            if camera_id in self._cameras and isinstance(entry, dict):
                model, hwaddr = entry.get("product_model"), entry.get("hwaddr")
                self._hardware[camera_id] = CameraHardware(
                    model if isinstance(model, str) and model else None,
                    hwaddr if isinstance(hwaddr, str) and hwaddr else None,
                )

    # --- lookups -------------------------------------------------------------------------

    def facts(self, camera_id: str) -> ModelFacts | None:
        """The model facts of a camera, or None while an ``auto`` camera has never been read."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            return None
        if camera.model != "auto":
            return facts_for(camera.model)
        model = self.hardware(camera_id).product_model
        return facts_for(model) if model is not None else None

    def hardware(self, camera_id: str) -> CameraHardware:
        """PRODUCT_MODEL and HWADDR as last read from the camera (saved across restarts)."""
        return self._hardware.get(camera_id, CameraHardware())

    def ptz(self, camera_id: str) -> bool:
        """Whether the camera is known to have pan/tilt motors."""
        facts = self.facts(camera_id)
        return facts is not None and facts.ptz

    def fov(self, camera_id: str) -> tuple[float, float] | None:
        """The camera's (horizontal, vertical) field of view: ``cameras[].fov``, else the model's default."""
        camera = self._cameras.get(camera_id)
        if camera is None:
            return None
        if camera.fov is not None:
            return camera.fov
        facts = self.facts(camera_id)
        return facts.fov if facts is not None else None

    @property
    def pending(self) -> list[str]:
        """The ``auto`` cameras not read from the camera in this run."""
        return [cid for cid, cam in self._cameras.items() if cam.model == "auto" and cid not in self._verified]

    # --- reading the cameras ---------------------------------------------------------------

    def wanted(self) -> bool:
        """Rounds run while an ``auto`` camera has not been read in this run (PeriodicService)."""
        return bool(self.pending)

    async def round(self) -> None:
        """A round of the loop (PeriodicService): ``refresh()``."""
        await self.refresh()

    async def refresh(self) -> None:
        """Read the pending ``auto`` cameras once; never raises."""
        try:
            for camera_id in self.pending:
                await self._read(camera_id)
        except CancelledError:
            return
        except Exception:  # noqa: BLE001 - the loop body must never raise
            self.log.failure("reading camera models failed")

    async def _read(self, camera_id: str) -> None:
        client = self._clients.get(camera_id)
        if client is None:
            return
        try:
            values = await client.hardware(self._timeout)
        except CameraError as exc:
            if camera_id not in self._hardware and camera_id not in self._reported:
                self._reported.add(camera_id)
                self.log.warn("model of camera {camera_id} not known yet ({error}); no PTZ until it answers",
                              camera_id=camera_id, error=str(exc))
            return
        model = values.get("PRODUCT_MODEL") or None
        hwaddr = values.get("HWADDR") or None
        if model is None:
            self.log.warn("camera {camera_id}: hack_ini.cgi has no PRODUCT_MODEL; will ask again", camera_id=camera_id)
            return
        self._verified.add(camera_id)
        old = self.hardware(camera_id)
        new = CameraHardware(model, hwaddr or old.hwaddr)
        if new == old:
            return
        if model not in MODELS:
            self.log.warn("camera {camera_id} reports unknown model {model}; treating it as a fixed camera",
                          camera_id=camera_id, model=model)
        if old.product_model is not None and old.product_model != model:
            self.log.warn("camera {camera_id} changed model from {old} to {new}",
                          camera_id=camera_id, old=old.product_model, new=model)
        else:
            self.log.info("camera {camera_id} is a {product} ({model})",
                          camera_id=camera_id, product=facts_for(model).product, model=model)
        self._hardware[camera_id] = new
        self._save()
        if old.product_model != model:
            self._notify(camera_id)

    def _save(self) -> None:
        document = {
            cid: {"product_model": hw.product_model, "hwaddr": hw.hwaddr} for cid, hw in sorted(self._hardware.items())
        }
        self._store.save_in_background(STATE_NAME, document, "camera models")

    def _notify(self, camera_id: str) -> None:
        facts = self.facts(camera_id)
        for callback in self.on_change:
            try:
                callback(camera_id, facts)
            except Exception:  # noqa: BLE001 - one broken listener must not stop the others
                self.log.failure("a camera model listener failed")
