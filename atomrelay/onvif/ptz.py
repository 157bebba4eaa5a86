"""The ONVIF PTZ service (``tptz``, ver20) at ``/onvif/ptz_service``, for pan/tilt cameras.

One service per ONVIF device, over the cameras that device exposes; each pan/tilt
camera (an ATOM Cam Swing) has one PTZ node (``<camera>.ptz``) and one PTZ
configuration (``<camera>.ptzc``) that every profile of the camera carries. A profile
of a camera without motors (or whose model is not known yet) answers
``ter:NoPTZProfile``; an unknown profile ``ter:NoProfile``. GetServices and
GetCapabilities name the service only while one of its cameras is known to have motors:
a ``model: auto`` camera not read yet counts as fixed (as everywhere in the relay), and
the service appears once its model is read as a Swing (Home Assistant would otherwise
offer PTZ controls and a wiper switch for a fixed camera).

Spaces (all generic, see ``atomrelay.camera.ptz`` for the mapping to degrees):

=================================  =============================================
group                              space, range
=================================  =============================================
AbsolutePanTiltPositionSpace       PositionGenericSpace, x and y in [-1, 1]
RelativePanTiltTranslationSpace    TranslationGenericSpace (default) and
                                   TranslationSpaceFov, x and y in [-1, 1]
ContinuousPanTiltVelocitySpace     VelocityGenericSpace, x and y in [-1, 1]
PanTiltSpeedSpace                  GenericSpeedSpace, [0, 1]
=================================  =============================================

There is no zoom: Zoom parts of requests are ignored (Home Assistant always sends
one). Moves are non-blocking: the answer comes once the move is queued. A camera the
health monitor finds offline answers its moves and preset changes with
``env:Receiver/ter:Action`` naming the reason, and GetStatus with MoveStatus UNKNOWN
and the reason in Error; configuration reads keep working so NVRs keep theirs.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Callable, Mapping, NoReturn, Protocol, Sequence, cast

from lxml.etree import _Element
from twisted.internet.interfaces import IReactorTime
from twisted.logger import Logger

from atomrelay.auth.policy import AccessClass
from atomrelay.camera.client import CameraError
from atomrelay.camera.health import OFFLINE, HealthState
from atomrelay.camera.moves import FOV_SPACE, GENERIC_SPACE, degrees_to_generic
from atomrelay.camera.ptz import (
    InvalidPresetName,
    NoHomePosition,
    NoSuchPreset,
    NotPtz,
    PresetNameTaken,
    PtzController,
    PtzError,
    PtzMoving,
    SaveFailed,
    TooManyPresets,
)
from atomrelay.clock import Clock
from atomrelay.config import CameraConfig
from atomrelay.onvif import tokens
from atomrelay.onvif.base import Operation, RequestContext, Service
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, SoapFault, receiver_fault, sender_fault
from atomrelay.xml.xstypes import format_duration, parse_duration, xs_datetime

PATH = "/onvif/ptz_service"
VERSION = (26, 6)
"""The PTZ spec release whose ptz.wsdl this service is written against (26.06)."""

POSITION_GENERIC = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/PositionGenericSpace"
TRANSLATION_GENERIC = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/TranslationGenericSpace"
TRANSLATION_FOV = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/TranslationSpaceFov"
VELOCITY_GENERIC = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/VelocityGenericSpace"
SPEED_GENERIC = "http://www.onvif.org/ver10/tptz/PanTiltSpaces/GenericSpeedSpace"

DEFAULT_TIMEOUT = 10.0
"""DefaultPTZTimeout: how long a ContinuousMove without Timeout lasts, seconds."""
TIMEOUT_RANGE = (0.1, 120.0)
"""Accepted ContinuousMove Timeout values, seconds."""

_NSMAP: dict[str | None, str] = {"tptz": ns.TPTZ, "tt": ns.TT}
TPTZ = Maker(ns.TPTZ, _NSMAP)
TT = Maker(ns.TT, _NSMAP)
_TT_CONFIGURATION = ns.q(ns.TT, "PTZConfiguration")
HealthLookup = Callable[[str], HealthState]
"""``HealthMonitor.state``."""


ProfileLookup = Callable[[str], "str | None"]


class _Profile(Protocol):
    @property
    def ptz(self) -> str | None: ...


class ProfileSource(Protocol):
    """The part of the Media model the profile lookup uses (``MediaModel.profile``)."""

    def profile(self, token: str) -> _Profile: ...


def media_profile_lookup(model: ProfileSource) -> ProfileLookup:
    """A ``profile_camera`` lookup over the Media model, so user-made profiles work too.

    A profile answers with the camera of the PTZ configuration it holds, ``""`` without
    one; a token the model does not know (it raises its ``ter:NoProfile`` fault) is None.
    """

    def lookup(token: str) -> str | None:
        try:
            found = model.profile(token)
        except SoapFault:
            return None
        return tokens.split_camera(found.ptz) if found.ptz else ""

    return lookup


def camera_offline_fault(camera_id: str, health: HealthLookup | None) -> SoapFault | None:
    """The ``ter:Action`` fault for a camera the health monitor finds offline, else None."""
    if health is None:
        return None
    state = health(camera_id)
    if state.state != OFFLINE:
        return None
    return receiver_fault("Action", reason=f"camera {camera_id} is offline: {state.reason}")


def camera_error_fault(camera_id: str, error: CameraError) -> SoapFault:
    """The ``ter:Action`` fault for a camera that did not do what was asked."""
    return receiver_fault("Action", reason=f"camera {camera_id} failed: {error}")


def _space2d(group: str, uri: str, low: float, high: float) -> _Element:
    return TT(group, TT("URI", uri), TT("XRange", TT("Min", f"{low:g}"), TT("Max", f"{high:g}")),
              TT("YRange", TT("Min", f"{low:g}"), TT("Max", f"{high:g}")))


def _space1d(group: str, uri: str, low: float, high: float) -> _Element:
    return TT(group, TT("URI", uri), TT("XRange", TT("Min", f"{low:g}"), TT("Max", f"{high:g}")))


def _spaces() -> _Element:
    return TT(
        "SupportedPTZSpaces",
        _space2d("AbsolutePanTiltPositionSpace", POSITION_GENERIC, -1, 1),
        _space2d("RelativePanTiltTranslationSpace", TRANSLATION_GENERIC, -1, 1),
        _space2d("RelativePanTiltTranslationSpace", TRANSLATION_FOV, -1, 1),
        _space2d("ContinuousPanTiltVelocitySpace", VELOCITY_GENERIC, -1, 1),
        _space1d("PanTiltSpeedSpace", SPEED_GENERIC, 0, 1),
    )


class PtzService:
    """The PTZ service of one (aggregate or per-camera) virtual device.

    ``cameras`` are the cameras this device exposes; ``controllers`` the relay's
    PtzController per camera id (shared by all devices); ``health`` the
    HealthMonitor's ``state`` lookup; ``profile_camera`` maps a profile token to the
    camera whose PTZ configuration the profile holds: a camera id, ``""`` for a profile
    without PTZ configuration, None for no such profile (default: the fixed
    ``<camera>.<stream>`` profiles of ``cameras``; with user-made profiles, pass a
    lookup over the Media model).
    """

    log = Logger()

    def __init__(
        self,
        clock: IReactorTime,
        cameras: Sequence[CameraConfig],
        controllers: Mapping[str, PtzController],
        health: HealthLookup | None = None,
        profile_camera: ProfileLookup | None = None,
        use_count: Callable[[str], int] | None = None,
    ) -> None:
        self._clock = cast(Clock, clock)
        self._use_count = use_count
        self._cameras = {camera.id: camera for camera in cameras}
        self._controllers = controllers
        self._health = health
        self._profile_camera = profile_camera or self._fixed_profile
        self._cache: dict[tuple[Any, ...], _Element] = {}
        self._service: Service | None = None

    # --- public API ------------------------------------------------------------------------

    def service(self) -> Service:
        """The ``Service`` to hand to the SOAP server (built once)."""
        if self._service is None:
            self._service = Service(
                namespace=ns.TPTZ,
                path=PATH,
                version=VERSION,
                operations=self._operations(),
                capabilities=lambda ctx: self._cached(("capabilities",), self._capabilities),
                listed=lambda: bool(self._ptz_cameras()),
            )
        return self._service

    def ptz_configuration_element(self, camera: CameraConfig, tag: str = _TT_CONFIGURATION) -> _Element | None:
        """The camera's ``tt:PTZConfiguration`` for media profiles, or None for a camera without motors.

        ``tag`` names the element (Media2 profiles call it ``tr2:PTZ``).
        """
        controller = self._controllers.get(camera.id)
        if controller is None or not controller.ptz:
            return None
        return self._cached(
            ("configuration", camera.id, tag, controller.max_presets), lambda: self._configuration(camera, tag)
        )

    # --- plumbing --------------------------------------------------------------------------

    def _operations(self) -> dict[str, Operation]:
        read, act = AccessClass.READ_MEDIA, AccessClass.ACTUATE
        table: dict[str, tuple[Any, AccessClass]] = {
            "GetServiceCapabilities": (self.get_service_capabilities, AccessClass.PRE_AUTH),
            "GetNodes": (self.get_nodes, read),
            "GetNode": (self.get_node, read),
            "GetConfigurations": (self.get_configurations, read),
            "GetConfiguration": (self.get_configuration, read),
            "GetConfigurationOptions": (self.get_configuration_options, read),
            "SetConfiguration": (self.set_configuration, act),
            "GetStatus": (self.get_status, read),
            "GetPresets": (self.get_presets, read),
            "AbsoluteMove": (self.absolute_move, act),
            "RelativeMove": (self.relative_move, act),
            "ContinuousMove": (self.continuous_move, act),
            "Stop": (self.stop, act),
            "SetPreset": (self.set_preset, act),
            "RemovePreset": (self.remove_preset, act),
            "GotoPreset": (self.goto_preset, act),
            "GotoHomePosition": (self.goto_home_position, act),
            "SetHomePosition": (self.set_home_position, act),
        }
        return {name: Operation(handler, access) for name, (handler, access) in table.items()}

    def _cached(self, key: tuple[Any, ...], build: Callable[[], _Element]) -> _Element:
        """A fresh copy of a fragment that only depends on ``key`` (the SOAP layer moves what it gets)."""
        element = self._cache.get(key)
        if element is None:
            if len(self._cache) >= 256:
                self._cache.clear()
            element = self._cache[key] = build()
        return copy.deepcopy(element)

    def _fixed_profile(self, token: str) -> str | None:
        camera = self._cameras.get(tokens.split_camera(token))
        if camera is None or all(tokens.profile(camera.id, s.name) != token for s in camera.streams):
            return None
        return camera.id

    def _ptz_cameras(self) -> list[tuple[CameraConfig, PtzController]]:
        result = []
        for camera in self._cameras.values():
            controller = self._controllers.get(camera.id)
            if controller is not None and controller.ptz:
                result.append((camera, controller))
        return result

    def _resolve(self, ctx: RequestContext) -> tuple[CameraConfig, PtzController]:
        """The camera and controller of the request's ProfileToken (NoProfile / NoPTZProfile faults)."""
        token = _text(ctx.body, "ProfileToken")
        camera_id = self._profile_camera(token) if token else None
        if camera_id is None:
            raise sender_fault("InvalidArgVal", "NoProfile", reason=f"no profile {token[:64]!r}")
        camera = self._cameras.get(camera_id)
        controller = self._controllers.get(camera_id)
        if camera is None or controller is None or not controller.ptz:
            raise sender_fault("InvalidArgVal", "NoPTZProfile",
                               reason=f"profile {token!r} has no PTZ configuration")
        return camera, controller

    def _reachable(self, camera: CameraConfig) -> None:
        fault = camera_offline_fault(camera.id, self._health)
        if fault is not None:
            raise fault

    def _raise(self, camera: CameraConfig, error: Exception) -> NoReturn:
        """Turn a controller or camera error into the PTZ spec's fault."""
        if isinstance(error, CameraError):
            raise camera_error_fault(camera.id, error) from error
        reason = str(error)
        if isinstance(error, NoSuchPreset):
            raise sender_fault("InvalidArgVal", "NoToken", reason=reason) from error
        if isinstance(error, PresetNameTaken):
            raise sender_fault("InvalidArgVal", "PresetExist", reason=reason) from error
        if isinstance(error, InvalidPresetName):
            raise sender_fault("InvalidArgVal", "InvalidPresetName", reason=reason) from error
        if isinstance(error, TooManyPresets):
            raise receiver_fault("Action", "TooManyPresets", reason=reason) from error
        if isinstance(error, PtzMoving):
            raise receiver_fault("Action", "MovingPTZ", reason="Preset cannot be set while the camera is moving") from error
        if isinstance(error, NoHomePosition):
            raise sender_fault("InvalidArgVal", "NoHomePosition", reason=reason) from error
        if isinstance(error, NotPtz):
            raise sender_fault("InvalidArgVal", "NoPTZProfile", reason=reason) from error
        if isinstance(error, SaveFailed):
            raise receiver_fault("Action", reason="the presets could not be saved on the relay") from error
        raise error

    # --- static descriptions ------------------------------------------------------------------

    def _capabilities(self) -> _Element:
        return TPTZ("Capabilities", {
            "EFlip": "false",
            "Reverse": "false",
            "GetCompatibleConfigurations": "false",
            "MoveStatus": "true",
            "StatusPosition": "true",
        })

    def get_service_capabilities(self, ctx: RequestContext) -> _Element:
        """GetServiceCapabilities: MoveStatus and StatusPosition (Frigate's autotracking needs both)."""
        return TPTZ("GetServiceCapabilitiesResponse", self._cached(("capabilities",), self._capabilities))

    def _node(self, camera: CameraConfig, controller: PtzController) -> _Element:
        return self._cached(("node", camera, controller.max_presets), lambda: TPTZ(
            "PTZNode",
            {"token": tokens.ptz_node(camera.id), "FixedHomePosition": "false", "GeoMove": "false"},
            TT("Name", f"{camera.name or camera.id} pan/tilt"[:64]),
            _spaces(),
            TT("MaximumNumberOfPresets", str(controller.max_presets)),
            TT("HomeSupported", "true"),
        ))

    def _configuration(self, camera: CameraConfig, tag: str) -> _Element:
        element: _Element = Maker(None, _NSMAP)(tag, {"token": tokens.ptz_configuration(camera.id)})
        for child in (
            TT("Name", f"{camera.name or camera.id} PTZ"[:64]),
            TT("UseCount", str(len(camera.streams))),
            TT("NodeToken", tokens.ptz_node(camera.id)),
            TT("DefaultAbsolutePantTiltPositionSpace", POSITION_GENERIC),
            TT("DefaultRelativePanTiltTranslationSpace", TRANSLATION_GENERIC),
            TT("DefaultContinuousPanTiltVelocitySpace", VELOCITY_GENERIC),
            TT("DefaultPTZSpeed", TT("PanTilt", {"x": "1", "y": "1", "space": SPEED_GENERIC})),
            TT("DefaultPTZTimeout", format_duration(DEFAULT_TIMEOUT)),
            TT("PanTiltLimits", _space2d("Range", POSITION_GENERIC, -1, 1)),
        ):
            element.append(child)
        return element

    def _configuration_for(self, token: str) -> tuple[CameraConfig, PtzController]:
        for camera, controller in self._ptz_cameras():
            if tokens.ptz_configuration(camera.id) == token:
                return camera, controller
        raise sender_fault("InvalidArgVal", "NoConfig", reason=f"no PTZ configuration {token[:64]!r}")

    def get_nodes(self, ctx: RequestContext) -> _Element:
        """GetNodes: one node per pan/tilt camera of this device."""
        return TPTZ("GetNodesResponse", *(self._node(c, p) for c, p in self._ptz_cameras()))

    def get_node(self, ctx: RequestContext) -> _Element:
        """GetNode (``ter:NoEntity`` for an unknown token)."""
        token = _text(ctx.body, "NodeToken")
        for camera, controller in self._ptz_cameras():
            if tokens.ptz_node(camera.id) == token:
                return TPTZ("GetNodeResponse", self._node(camera, controller))
        raise sender_fault("InvalidArgVal", "NoEntity", reason=f"no PTZ node {token[:64]!r}")

    def get_configurations(self, ctx: RequestContext) -> _Element:
        """GetConfigurations: one per pan/tilt camera of this device."""
        return TPTZ("GetConfigurationsResponse", *(self._counted(camera) for camera, _ in self._ptz_cameras()))

    def get_configuration(self, ctx: RequestContext) -> _Element:
        """GetConfiguration (``ter:NoConfig`` for an unknown token)."""
        camera, _ = self._configuration_for(_text(ctx.body, "PTZConfigurationToken"))
        return TPTZ("GetConfigurationResponse", self._counted(camera))

    def _counted(self, camera: CameraConfig) -> _Element:
        """The camera's ``tptz:PTZConfiguration`` with its UseCount: the media profiles holding it, when this service
        was given ``use_count``, else the camera's fixed profiles."""
        element = self.ptz_configuration_element(camera, ns.q(ns.TPTZ, "PTZConfiguration"))
        assert element is not None
        if self._use_count is not None:
            count = element.find(ns.q(ns.TT, "UseCount"))
            assert count is not None
            count.text = str(self._use_count(tokens.ptz_configuration(camera.id)))
        return element

    def get_configuration_options(self, ctx: RequestContext) -> _Element:
        """GetConfigurationOptions: the spaces with their ranges and the accepted timeouts."""
        self._configuration_for(_text(ctx.body, "ConfigurationToken"))
        return self._cached(("options",), lambda: TPTZ(
            "GetConfigurationOptionsResponse",
            TPTZ(
                "PTZConfigurationOptions",
                TT("Spaces", *_spaces()),
                TT("PTZTimeout", TT("Min", format_duration(TIMEOUT_RANGE[0])), TT("Max", format_duration(TIMEOUT_RANGE[1]))),
            ),
        ))

    def set_configuration(self, ctx: RequestContext) -> _Element:
        """SetConfiguration: the configuration is fixed (the camera's spaces, limits and timeout), so one that
        changes nothing is accepted and any change is ``ter:ConfigModify``, naming the first element changed."""
        requested = ctx.body.find(ns.q(ns.TPTZ, "PTZConfiguration"))
        if requested is None:
            raise sender_fault("InvalidArgVal", "ConfigModify", reason="SetConfiguration needs a PTZConfiguration")
        camera, _ = self._configuration_for((requested.get("token") or "").strip())
        current = self.ptz_configuration_element(camera)
        assert current is not None
        changed = _first_change(requested, current)
        if changed is not None:
            raise sender_fault("InvalidArgVal", "ConfigModify", reason=f"the PTZ configuration cannot be changed "
                               f"(it follows the camera's motors): {changed} differs from GetConfiguration's")
        return TPTZ("SetConfigurationResponse")

    # --- status and presets -----------------------------------------------------------------------

    async def get_status(self, ctx: RequestContext) -> _Element:
        """GetStatus: Position from MOTORPOS, MoveStatus, UtcTime; UNKNOWN and Error when the camera cannot tell."""
        camera, controller = self._resolve(ctx)
        facts = controller.facts
        assert facts is not None
        error: str | None = None
        position = controller.position
        state = self._health(camera.id) if self._health is not None else None
        if state is not None and state.state == OFFLINE:
            error = f"camera offline: {state.reason}"
        else:
            try:
                position = await controller.read_position()
            except CameraError as exc:
                error = f"camera does not answer: {exc}"
        if error is not None:
            move_status = "UNKNOWN"
        else:
            move_status = "MOVING" if controller.moving or (position is not None and position.idle is False) else "IDLE"
            if controller.last_error:
                error = f"the last move failed: {controller.last_error}"
        parts: list[_Element] = []
        if position is not None:
            x, y = degrees_to_generic(position.pan, position.tilt, facts)
            parts.append(TT("Position", TT("PanTilt", {"x": _num(x), "y": _num(y), "space": POSITION_GENERIC})))
        parts.append(TT("MoveStatus", TT("PanTilt", move_status)))
        if error is not None:
            parts.append(TT("Error", error))
        parts.append(TT("UtcTime", xs_datetime(self._clock.seconds())))
        return TPTZ("GetStatusResponse", TPTZ("PTZStatus", *parts))

    def get_presets(self, ctx: RequestContext) -> _Element:
        """GetPresets: the camera's saved presets with their generic positions."""
        camera, controller = self._resolve(ctx)
        facts = controller.facts
        assert facts is not None
        presets = []
        for preset in controller.presets():
            x, y = degrees_to_generic(preset.pan, preset.tilt, facts)
            presets.append(TPTZ(
                "Preset", {"token": preset.token},
                TT("Name", preset.name),
                TT("PTZPosition", TT("PanTilt", {"x": _num(x), "y": _num(y), "space": POSITION_GENERIC})),
            ))
        return TPTZ("GetPresetsResponse", *presets)

    async def set_preset(self, ctx: RequestContext) -> _Element:
        """SetPreset: save the current position as a new preset, or into PresetToken's."""
        camera, controller = self._resolve(ctx)
        self._reachable(camera)
        name_element = ctx.body.find(ns.q(ns.TPTZ, "PresetName"))
        name = (name_element.text or "") if name_element is not None else None
        token = _text(ctx.body, "PresetToken") or None
        try:
            saved = await controller.set_preset(token, name)
        except (PtzError, CameraError) as exc:
            self._raise(camera, exc)
        self.log.info("camera {camera_id}: preset {token} saved by {user}",
                      camera_id=camera.id, token=saved, user=ctx.caller.username)
        return TPTZ("SetPresetResponse", TPTZ("PresetToken", saved))

    async def remove_preset(self, ctx: RequestContext) -> _Element:
        """RemovePreset."""
        camera, controller = self._resolve(ctx)
        try:
            await controller.remove_preset(_text(ctx.body, "PresetToken"))
        except PtzError as exc:
            self._raise(camera, exc)
        return TPTZ("RemovePresetResponse")

    def goto_preset(self, ctx: RequestContext) -> _Element:
        """GotoPreset (non-blocking)."""
        camera, controller = self._resolve(ctx)
        token = _text(ctx.body, "PresetToken")
        speed = _speed(ctx.body)
        try:
            controller.preset(token)
            self._reachable(camera)
            controller.goto_preset(token, speed)
        except PtzError as exc:
            self._raise(camera, exc)
        return TPTZ("GotoPresetResponse")

    def goto_home_position(self, ctx: RequestContext) -> _Element:
        """GotoHomePosition (non-blocking; ``ter:NoHomePosition`` until one is set)."""
        camera, controller = self._resolve(ctx)
        speed = _speed(ctx.body)
        if controller.home is None:
            self._raise(camera, NoHomePosition(f"no home position was set for camera {camera.id}"))
        self._reachable(camera)
        try:
            controller.goto_home(speed)
        except PtzError as exc:
            self._raise(camera, exc)
        return TPTZ("GotoHomePositionResponse")

    async def set_home_position(self, ctx: RequestContext) -> _Element:
        """SetHomePosition: the relay remembers the current position (and tells the camera with ``posrec``)."""
        camera, controller = self._resolve(ctx)
        self._reachable(camera)
        try:
            await controller.set_home()
        except (PtzError, CameraError) as exc:
            self._raise(camera, exc)
        return TPTZ("SetHomePositionResponse")

    # --- moves ------------------------------------------------------------------------------------

    def absolute_move(self, ctx: RequestContext) -> _Element:
        """AbsoluteMove to a generic position (non-blocking)."""
        camera, controller = self._resolve(ctx)
        pan_tilt = _vector(ctx.body, "Position", "InvalidPosition", (POSITION_GENERIC,), -1.0, 1.0)
        speed = _speed(ctx.body)
        if pan_tilt is not None:
            self._reachable(camera)
            controller.absolute(pan_tilt[0], pan_tilt[1], speed)
        return TPTZ("AbsoluteMoveResponse")

    async def relative_move(self, ctx: RequestContext) -> _Element:
        """RelativeMove in the generic or FOV translation space (non-blocking once the start is known)."""
        camera, controller = self._resolve(ctx)
        pan_tilt = _vector(ctx.body, "Translation", "InvalidTranslation",
                           (TRANSLATION_GENERIC, TRANSLATION_FOV), -1.0, 1.0)
        speed = _speed(ctx.body)
        if pan_tilt is None:
            return TPTZ("RelativeMoveResponse")
        self._reachable(camera)
        dx, dy, space = pan_tilt
        try:
            if dx == 0 and dy == 0:
                await controller.stop()
            else:
                await controller.relative(dx, dy, FOV_SPACE if space == TRANSLATION_FOV else GENERIC_SPACE, speed)
        except (PtzError, CameraError) as exc:
            self._raise(camera, exc)
        return TPTZ("RelativeMoveResponse")

    def continuous_move(self, ctx: RequestContext) -> _Element:
        """ContinuousMove at a generic velocity until Stop or the timeout (non-blocking)."""
        camera, controller = self._resolve(ctx)
        velocity = _vector(ctx.body, "Velocity", "InvalidVelocity", (VELOCITY_GENERIC,), -1.0, 1.0)
        timeout = DEFAULT_TIMEOUT
        timeout_element = ctx.body.find(ns.q(ns.TPTZ, "Timeout"))
        if timeout_element is not None:
            try:
                timeout = parse_duration(timeout_element.text or "")
            except ValueError:
                raise sender_fault("InvalidArgVal", "TimeoutNotSupported",
                                   reason=f"Timeout {(timeout_element.text or '')[:40]!r} is not a duration") from None
            if not TIMEOUT_RANGE[0] <= timeout <= TIMEOUT_RANGE[1]:
                raise sender_fault("InvalidArgVal", "TimeoutNotSupported",
                                   reason=f"Timeout must be {TIMEOUT_RANGE[0]:g} to {TIMEOUT_RANGE[1]:g} seconds")
        if velocity is not None:
            self._reachable(camera)
            controller.continuous(velocity[0], velocity[1], timeout)
        return TPTZ("ContinuousMoveResponse")

    async def stop(self, ctx: RequestContext) -> _Element:
        """Stop: ends a continuous move and halts the running move, answering once the camera has stopped
        (PanTilt defaults to true; there is no zoom)."""
        camera, controller = self._resolve(ctx)
        pan_tilt = _text(ctx.body, "PanTilt") or "true"
        if pan_tilt not in ("true", "false", "1", "0"):
            raise sender_fault("InvalidArgVal", reason=f"PanTilt {pan_tilt[:10]!r} is not a boolean")
        if pan_tilt in ("false", "0"):
            return TPTZ("StopResponse")
        self._reachable(camera)
        try:
            await controller.stop()
        except (PtzError, CameraError) as exc:
            self._raise(camera, exc)
        return TPTZ("StopResponse")


def _first_change(requested: _Element, current: _Element) -> str | None:
    """The local name of the first element (or attribute) where ``requested`` differs from ``current``, compared as
    values (``1`` is ``1.0``, ``PT10S`` is ``PT10.0S``); UseCount, which the relay counts, is not compared."""
    wanted = [child for child in requested if isinstance(child.tag, str) and _local(child) != "UseCount"]
    have = [child for child in current if isinstance(child.tag, str) and _local(child) != "UseCount"]
    for index in range(max(len(wanted), len(have))):
        if index >= len(wanted) or index >= len(have) or _local(wanted[index]) != _local(have[index]):
            return _local((wanted if index < len(wanted) else have)[index])
        mine, theirs = wanted[index], have[index]
        attributes = ({_local_name(k): _as_value(v) for k, v in mine.attrib.items()},
                      {_local_name(k): _as_value(v) for k, v in theirs.attrib.items()})
        if attributes[0] != attributes[1] or (len(theirs) == 0 and _as_value(mine.text) != _as_value(theirs.text)):
            return _local(mine)
        inner = _first_change(mine, theirs)
        if inner is not None:
            return f"{_local(mine)}/{inner}"
    return None


def _local(element: _Element) -> str:
    return _local_name(element.tag)


def _local_name(name: Any) -> str:
    return str(name).rsplit("}", 1)[-1]


def _as_value(raw: str | bytes | None) -> object:
    """Text as the value it writes: a number, a duration in seconds, else the text itself."""
    text = (raw.decode() if isinstance(raw, bytes) else raw or "").strip()
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return ("duration", parse_duration(text))
    except ValueError:
        return text


def _text(body: _Element, local: str) -> str:
    element = body.find(ns.q(ns.TPTZ, local))
    return (element.text or "").strip() if element is not None else ""


def _number(element: _Element, attribute: str, subcode: str) -> float:
    raw = element.get(attribute)
    try:
        value = float(raw) if raw is not None else math.nan
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise sender_fault("InvalidArgVal", subcode, reason=f"{attribute}={str(raw)[:20]!r} is not a number")
    return value


def _vector(body: _Element, local: str, subcode: str, spaces: tuple[str, ...],
            low: float, high: float) -> tuple[float, float, str] | None:
    """The PanTilt of a PTZVector/PTZSpeed argument (x, y, space), checked; None when it has no PanTilt."""
    holder = body.find(ns.q(ns.TPTZ, local))
    if holder is None:
        raise sender_fault("InvalidArgVal", subcode, reason=f"{local} is missing")
    pan_tilt = holder.find(ns.q(ns.TT, "PanTilt"))
    if pan_tilt is None:
        return None
    space = (pan_tilt.get("space") or spaces[0]).strip()
    if space not in spaces:
        raise sender_fault("InvalidArgVal", "SpaceNotSupported", reason=f"space {space[:100]!r} is not supported")
    x, y = _number(pan_tilt, "x", subcode), _number(pan_tilt, "y", subcode)
    if not (low <= x <= high and low <= y <= high):
        raise sender_fault("InvalidArgVal", subcode, reason=f"{local} ({x:g}, {y:g}) is outside [{low:g}, {high:g}]")
    return x, y, space


def _speed(body: _Element) -> float:
    """The PanTilt speed of an optional Speed argument (generic speed space, [0, 1]); 1 when absent."""
    holder = body.find(ns.q(ns.TPTZ, "Speed"))
    pan_tilt = holder.find(ns.q(ns.TT, "PanTilt")) if holder is not None else None
    if pan_tilt is None:
        return 1.0
    space = (pan_tilt.get("space") or SPEED_GENERIC).strip()
    if space != SPEED_GENERIC:
        raise sender_fault("InvalidArgVal", "SpaceNotSupported", reason=f"speed space {space[:100]!r} is not supported")
    speed = _number(pan_tilt, "x", "InvalidSpeed")
    if not 0 <= speed <= 1:
        raise sender_fault("InvalidArgVal", "InvalidSpeed", reason=f"speed {speed:g} is outside [0, 1]")
    return speed


def _num(value: float) -> str:
    return f"{value:.4f}".rstrip("0").rstrip(".") if value != 0 else "0"
