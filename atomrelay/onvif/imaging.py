"""The ONVIF Imaging service (``timg``, ver20) at ``/onvif/imaging_service``.

The atomcam_tools firmware exposes one imaging setting, the night-vision mode, so
that is the one setting served. Its mapping to ONVIF's IrCutFilter:

==============  ==================  =========================================
IrCutFilter     camera command      meaning
==============  ==================  =========================================
``ON``          ``night off``       IR-cut filter in: day mode, colour picture
``OFF``         ``night on``        IR-cut filter out: night mode, IR LEDs
``AUTO``        ``night auto``      the camera switches by itself
==============  ==================  =========================================

GetImagingSettings reads the mode back from the camera (``property nightVision``)
every time instead of remembering what was last set: the firmware UI and its
schedules change it too. Brightness, contrast, focus and the rest are not
controllable through the firmware, so GetOptions does not offer them and
SetImagingSettings refuses them (``ter:SettingsInvalid``). A camera the health
monitor finds offline answers the calls that need it with ``env:Receiver/ter:Action``
naming the reason; the option and status queries keep answering.
"""

from __future__ import annotations

import copy
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence

from lxml import etree
from lxml.etree import _Element
from twisted.logger import Logger

from atomrelay.auth.policy import AccessClass
from atomrelay.camera.client import CameraError
from atomrelay.config import CameraConfig
from atomrelay.onvif import tokens
from atomrelay.onvif.base import Operation, RequestContext, Service
from atomrelay.onvif.ptz import HealthLookup, camera_error_fault, camera_offline_fault
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, sender_fault

PATH = "/onvif/imaging_service"
VERSION = (22, 6)
"""The Imaging spec release this service follows (22.06; imaging.wsdl 19.06)."""

IR_CUT_TO_NIGHT = {"ON": "off", "OFF": "on", "AUTO": "auto"}
"""IrCutFilter → ``night`` argument: the IR-cut filter in (ON) is day mode, i.e. night vision off."""
NIGHT_TO_IR_CUT = {night: ir_cut for ir_cut, night in IR_CUT_TO_NIGHT.items()}

_NSMAP: dict[str | None, str] = {"timg": ns.TIMG, "tt": ns.TT}
TIMG = Maker(ns.TIMG, _NSMAP)
TT = Maker(ns.TT, _NSMAP)
_IR_CUT = ns.q(ns.TT, "IrCutFilter")


class NightVision(Protocol):
    """The part of ``CameraClient`` the service uses."""

    def night_mode(self, timeout: float | None = None) -> Awaitable[str]: ...

    def set_night_mode(self, mode: str, timeout: float | None = None) -> Awaitable[None]: ...


class ImagingService:
    """The Imaging service of one (aggregate or per-camera) virtual device.

    ``clients`` maps camera ids to their CameraClient; ``health`` is the
    HealthMonitor's ``state`` lookup. Video sources are ``<camera>.vs`` (tokens.py).
    """

    log = Logger()

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        clients: Mapping[str, NightVision],
        health: HealthLookup | None = None,
        timeout: float = 5.0,
    ) -> None:
        self._cameras = {tokens.video_source(camera.id): camera for camera in cameras}
        self._clients = clients
        self._health = health
        self._timeout = timeout
        self._cache: dict[str, _Element] = {}
        self._service: Service | None = None

    def service(self) -> Service:
        """The ``Service`` to hand to the SOAP server (built once)."""
        if self._service is None:
            read, act = AccessClass.READ_MEDIA, AccessClass.ACTUATE
            table: dict[str, tuple[Any, AccessClass]] = {
                "GetServiceCapabilities": (self.get_service_capabilities, AccessClass.PRE_AUTH),
                "GetImagingSettings": (self.get_imaging_settings, read),
                "SetImagingSettings": (self.set_imaging_settings, act),
                "GetOptions": (self.get_options, read),
                "GetMoveOptions": (self.get_move_options, read),
                "GetStatus": (self.get_status, read),
            }
            self._service = Service(
                namespace=ns.TIMG,
                path=PATH,
                version=VERSION,
                operations={name: Operation(handler, access) for name, (handler, access) in table.items()},
                capabilities=lambda ctx: self._cached("capabilities", self._capabilities),
            )
        return self._service

    def _cached(self, key: str, build: Callable[[], _Element]) -> _Element:
        element = self._cache.get(key)
        if element is None:
            element = self._cache[key] = build()
        return copy.deepcopy(element)

    def _source(self, ctx: RequestContext) -> tuple[CameraConfig, NightVision]:
        """The camera of the request's VideoSourceToken (``ter:NoSource`` otherwise)."""
        element = ctx.body.find(ns.q(ns.TIMG, "VideoSourceToken"))
        token = (element.text or "").strip() if element is not None else ""
        camera = self._cameras.get(token)
        client = self._clients.get(camera.id) if camera is not None else None
        if camera is None or client is None:
            raise sender_fault("InvalidArgVal", "NoSource", reason=f"no video source {token[:64]!r}")
        return camera, client

    def _reachable(self, camera: CameraConfig) -> None:
        fault = camera_offline_fault(camera.id, self._health)
        if fault is not None:
            raise fault

    def _capabilities(self) -> _Element:
        return TIMG("Capabilities", {"ImageStabilization": "false", "Presets": "false", "AdaptablePreset": "false"})

    def get_service_capabilities(self, ctx: RequestContext) -> _Element:
        """GetServiceCapabilities: no image stabilisation, no imaging presets."""
        return TIMG("GetServiceCapabilitiesResponse", self._cached("capabilities", self._capabilities))

    async def get_imaging_settings(self, ctx: RequestContext) -> _Element:
        """GetImagingSettings: IrCutFilter as the camera reports it now."""
        camera, client = self._source(ctx)
        self._reachable(camera)
        try:
            night = await client.night_mode(self._timeout)
        except CameraError as exc:
            raise camera_error_fault(camera.id, exc) from exc
        return TIMG("GetImagingSettingsResponse", TIMG("ImagingSettings", TT("IrCutFilter", NIGHT_TO_IR_CUT[night])))

    async def set_imaging_settings(self, ctx: RequestContext) -> _Element:
        """SetImagingSettings: only IrCutFilter can be set; anything else is ``ter:SettingsInvalid``."""
        camera, client = self._source(ctx)
        settings = ctx.body.find(ns.q(ns.TIMG, "ImagingSettings"))
        if settings is None:
            raise sender_fault("InvalidArgVal", "SettingsInvalid", reason="ImagingSettings is missing")
        mode: str | None = None
        for child in settings:
            if not isinstance(child.tag, str):
                continue
            if child.tag != _IR_CUT:
                name = etree.QName(child).localname
                raise sender_fault("InvalidArgVal", "SettingsInvalid",
                                   reason=f"{name} cannot be set on this camera; only IrCutFilter can")
            value = (child.text or "").strip()
            if value not in IR_CUT_TO_NIGHT:
                raise sender_fault("InvalidArgVal", "SettingsInvalid",
                                   reason=f"IrCutFilter {value[:20]!r} is not ON, OFF or AUTO")
            mode = value
        if mode is not None:
            self._reachable(camera)
            try:
                await client.set_night_mode(IR_CUT_TO_NIGHT[mode], self._timeout)
            except CameraError as exc:
                raise camera_error_fault(camera.id, exc) from exc
            self.log.info("camera {camera_id}: IrCutFilter {mode} (night {night}) set by {user}",
                          camera_id=camera.id, mode=mode, night=IR_CUT_TO_NIGHT[mode], user=ctx.caller.username)
        return TIMG("SetImagingSettingsResponse")

    def get_options(self, ctx: RequestContext) -> _Element:
        """GetOptions: the three IrCutFilter modes, nothing else."""
        self._source(ctx)
        return TIMG("GetOptionsResponse", self._cached("options", lambda: TIMG(
            "ImagingOptions", *(TT("IrCutFilterModes", mode) for mode in IR_CUT_TO_NIGHT)
        )))

    def get_move_options(self, ctx: RequestContext) -> _Element:
        """GetMoveOptions: empty, the lens has no focus motor."""
        self._source(ctx)
        return TIMG("GetMoveOptionsResponse", TIMG("MoveOptions"))

    def get_status(self, ctx: RequestContext) -> _Element:
        """GetStatus: empty, there is no focus to report on."""
        self._source(ctx)
        return TIMG("GetStatusResponse", TIMG("Status"))
