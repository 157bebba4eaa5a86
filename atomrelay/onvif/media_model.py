"""The media model of one ONVIF device, shared by Media (ver10) and Media2 (ver20).

Built from the cameras the device exposes (every camera in aggregate mode, one in
per-camera mode), never from list positions, so every token is stable across restarts
and config reorders (``atomrelay.onvif.tokens``):

* one VideoSource and one VideoSourceConfiguration per camera (the largest stream's
  resolution and fps; Bounds cover the whole picture);
* one VideoEncoderConfiguration per camera stream, exactly as configured (codec,
  resolution, fps, bitrate): the relay cannot re-encode, so the configuration is a
  description of what mediamtx passes through;
* one AudioSource and AudioSourceConfiguration per camera that has a stream with known
  audio, and one AudioEncoderConfiguration per such stream: G.711 8 kHz for H.264 with
  transcoded audio, AAC 48 kHz for H.265 with transcoded audio, and for passthrough
  streams whatever ``audio_codec`` says the camera sends;
* one fixed profile per camera stream, token ``<camera id>.<stream name>``;
* user-made profiles (CreateProfile), kept in ``state_dir`` under the StateStore name
  ``profiles`` (``profiles-<device id>`` for a per-camera device).

Profiles may combine configurations of one camera only, and a video and an audio
encoder of one stream only (a stream URI names one mediamtx path). Fixed profiles mirror
their camera stream: adding the configuration they already hold succeeds, any other
change is ``ter:ConfigurationConflict`` (make a profile of your own for other
combinations). The PTZ configuration of a camera comes from the PTZ service through the
``ptz_configuration`` hook, asked on every use (a camera's model may be detected late);
``ptz_camera`` answers the PTZ service's question which camera a profile's PTZ
configuration belongs to.
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Mapping, Sequence, Union

from lxml import etree
from lxml.etree import _Element
from twisted.internet.defer import DeferredLock
from twisted.logger import Logger

from atomrelay.config import CameraConfig, StreamConfig
from atomrelay.mediamtx.paths import path_name
from atomrelay.onvif import tokens
from atomrelay.xml import ns
from atomrelay.onvif.base import Operation, RequestContext, Service
from atomrelay.xml.soap import receiver_fault, sender_fault, SoapFault
from atomrelay.xml.soap import Maker
from atomrelay.state import StateError, StateStore

STATE_NAME = "profiles"
MAX_NAME_LENGTH = 64
"""``tt:Name`` and ``tt:ReferenceToken`` are at most 64 characters."""
SESSION_TIMEOUT = "PT60S"
"""The RTSP session timeout mediamtx announces (``Session: ...;timeout=60``)."""
QUALITY = 5.0
"""The one quality value reported: the relay passes the camera's stream through and
cannot change its quality, so the quality range is this single value."""

VIDEO_SOURCE = "VideoSource"
AUDIO_SOURCE = "AudioSource"
VIDEO_ENCODER = "VideoEncoder"
AUDIO_ENCODER = "AudioEncoder"
PTZ = "PTZ"
KINDS: tuple[str, ...] = (VIDEO_SOURCE, AUDIO_SOURCE, VIDEO_ENCODER, AUDIO_ENCODER, PTZ)
"""Configuration kinds a profile holds, named as in ``tr2:ConfigurationEnumeration``."""

PtzHook = Callable[[CameraConfig], Union[_Element, None]]
"""A camera's ``tt:PTZConfiguration``, a new element on every call (the model renames and
moves it), or None for a camera without motors (``PtzService.ptz_configuration_element``)."""


TT = Maker(ns.TT, {"tt": ns.TT})


@dataclass(frozen=True)
class AudioCodec:
    """What an audio encoder configuration says about a stream's audio."""

    media1: str | None
    """``tt:AudioEncoding`` (G711, AAC), or None where Media1 has no name for it."""
    media2: str
    """The IANA media subtype Media2 uses (PCMU, MP4A-LATM, ...)."""
    sample_rate: int
    """Hz."""
    bitrate: int
    """kbps; 0 when the camera does not say."""

    @property
    def sample_rate_khz(self) -> int:
        """ONVIF's unit for sample rates."""
        return self.sample_rate // 1000


G711 = AudioCodec("G711", "PCMU", 8000, 64)
"""H.264 with transcoded audio: ffmpeg's pcm_mulaw, 8 kHz mono (64 kbps)."""
AAC_TRANSCODED = AudioCodec("AAC", "MP4A-LATM", 48000, 69)
"""H.265 with transcoded audio: ffmpeg's native AAC encoder, 48 kHz mono (its default
69 kbps for mono 48 kHz, as ffmpeg reports it)."""
PASSTHROUGH_CODECS: Mapping[str, AudioCodec] = {
    "aac": AudioCodec("AAC", "MP4A-LATM", 8000, 0),
    "opus": AudioCodec(None, "opus", 48000, 0),
    "l16": AudioCodec(None, "L16", 8000, 128),
}
"""Audio the camera sends itself (8 kHz mono source; Opus is always 48 kHz on RTP)."""


def audio_codec(stream: StreamConfig) -> AudioCodec | None:
    """The audio a client gets from this stream's mediamtx path, or None when unknown or absent."""
    if stream.audio == "transcode":
        return G711 if stream.codec == "h264" else AAC_TRANSCODED
    if stream.audio == "passthrough" and stream.audio_codec is not None:
        return PASSTHROUGH_CODECS.get(stream.audio_codec)
    return None


@dataclass(frozen=True)
class VideoSource:
    """A camera's image sensor."""

    token: str
    camera: CameraConfig
    width: int
    height: int
    framerate: int


@dataclass(frozen=True)
class VideoSourceConfiguration:
    """The whole picture of one camera."""

    token: str
    name: str
    camera: CameraConfig
    source: VideoSource


@dataclass(frozen=True)
class VideoEncoderConfiguration:
    """One camera stream's video, as the camera encodes it."""

    token: str
    name: str
    camera: CameraConfig
    stream: StreamConfig

    @property
    def encoding(self) -> str:
        """``H264`` or ``H265``."""
        return self.stream.codec.upper()


@dataclass(frozen=True)
class AudioSource:
    """A camera's microphone."""

    token: str
    camera: CameraConfig
    channels: int = 1


@dataclass(frozen=True)
class AudioSourceConfiguration:
    """The microphone of one camera."""

    token: str
    name: str
    camera: CameraConfig
    source: AudioSource


@dataclass(frozen=True)
class AudioEncoderConfiguration:
    """One camera stream's audio, as mediamtx serves it."""

    token: str
    name: str
    camera: CameraConfig
    stream: StreamConfig
    codec: AudioCodec


@dataclass(frozen=True)
class PTZConfigurationRef:
    """The PTZ configuration of a PTZ camera (its content comes from the PTZ hook)."""

    token: str
    camera: CameraConfig


Configuration = Union[
    VideoSourceConfiguration,
    VideoEncoderConfiguration,
    AudioSourceConfiguration,
    AudioEncoderConfiguration,
    PTZConfigurationRef,
]


@dataclass(frozen=True)
class Profile:
    """A media profile: a name and at most one configuration token of each kind."""

    token: str
    name: str
    fixed: bool
    video_source: str | None = None
    audio_source: str | None = None
    video_encoder: str | None = None
    audio_encoder: str | None = None
    ptz: str | None = None

    def slot(self, kind: str) -> str | None:
        """The configuration token of ``kind`` (one of KINDS), or None."""
        return _slots(self)[kind]

    def with_slots(self, slots: Mapping[str, str | None]) -> Profile:
        """This profile with the given slots replaced."""
        changes: dict[str, Any] = {_FIELDS[kind]: token for kind, token in slots.items()}
        return replace(self, **changes)


_FIELDS = {
    VIDEO_SOURCE: "video_source",
    AUDIO_SOURCE: "audio_source",
    VIDEO_ENCODER: "video_encoder",
    AUDIO_ENCODER: "audio_encoder",
    PTZ: "ptz",
}


def _slots(profile: Profile) -> dict[str, str | None]:
    return {kind: getattr(profile, field) for kind, field in _FIELDS.items()}


class MediaModel:
    """Sources, configurations and profiles of one ONVIF device, and the rules for changing profiles.

    ``max_profiles`` is the configured limit (``onvif.max_profiles``); the device always
    holds its fixed profiles even when they alone exceed it. ``rtsp_port`` is mediamtx's.
    Changes raise ``SoapFault`` with the Media spec's fault codes and are saved before they
    take effect. ``generation`` grows with every change, for response caches.
    """

    log = Logger()

    def __init__(
        self,
        cameras: Sequence[CameraConfig],
        store: StateStore,
        rtsp_port: int,
        max_profiles: int,
        device_id: str = "",
        ptz_configuration: PtzHook | None = None,
    ) -> None:
        self._store = store
        self._lock = DeferredLock()
        """One profile change at a time, each checked against what the previous one saved."""
        self.rtsp_port = rtsp_port
        self._max_profiles = max_profiles
        self._ptz_hook = ptz_configuration
        self._state_name = f"{STATE_NAME}-{device_id}" if device_id else STATE_NAME
        self.cameras: tuple[CameraConfig, ...] = tuple(cameras)
        self._by_camera = {camera.id: camera for camera in self.cameras}
        self.generation = 0
        self.video_sources: list[VideoSource] = []
        self.audio_sources: list[AudioSource] = []
        self._configs: dict[str, dict[str, Configuration]] = {kind: {} for kind in KINDS}
        fixed: list[Profile] = []
        for camera in self.cameras:
            fixed.extend(self._add_camera(camera))
        self._fixed: dict[str, Profile] = {profile.token: profile for profile in fixed}
        self._user: dict[str, Profile] = {}
        self._next = 1
        self._load()

    def _add_camera(self, camera: CameraConfig) -> list[Profile]:
        largest = max(camera.streams, key=lambda s: (s.width * s.height, s.fps))
        source = VideoSource(
            tokens.video_source(camera.id), camera, largest.width, largest.height, max(s.fps for s in camera.streams)
        )
        self.video_sources.append(source)
        vsc = VideoSourceConfiguration(tokens.video_source_configuration(camera.id), _name(camera.name), camera, source)
        self._configs[VIDEO_SOURCE][vsc.token] = vsc
        audio: AudioSourceConfiguration | None = None
        if any(audio_codec(stream) is not None for stream in camera.streams):
            microphone = AudioSource(tokens.audio_source(camera.id), camera)
            self.audio_sources.append(microphone)
            audio = AudioSourceConfiguration(
                tokens.audio_source_configuration(camera.id), _name(camera.name), camera, microphone
            )
            self._configs[AUDIO_SOURCE][audio.token] = audio
        profiles = []
        for stream in camera.streams:
            label = _name(f"{camera.name} {stream.name}")
            vec = VideoEncoderConfiguration(
                tokens.video_encoder_configuration(camera.id, stream.name), label, camera, stream
            )
            self._configs[VIDEO_ENCODER][vec.token] = vec
            profile = Profile(tokens.profile(camera.id, stream.name), label, True, vsc.token, None, vec.token)
            codec = audio_codec(stream)
            if codec is not None and audio is not None:
                aec = AudioEncoderConfiguration(
                    tokens.audio_encoder_configuration(camera.id, stream.name), label, camera, stream, codec
                )
                self._configs[AUDIO_ENCODER][aec.token] = aec
                profile = replace(profile, audio_source=audio.token, audio_encoder=aec.token)
            self._configs[PTZ][tokens.ptz_configuration(camera.id)] = PTZConfigurationRef(
                tokens.ptz_configuration(camera.id), camera
            )
            profiles.append(profile)
        return profiles

    # --- reading -----------------------------------------------------------------------

    @property
    def max_profiles(self) -> int:
        """MaximumNumberOfProfiles: the configured limit, but never fewer than the fixed profiles."""
        return max(self._max_profiles, len(self._fixed))

    def profiles(self) -> list[Profile]:
        """Every profile: fixed ones in config order, then user-made ones in creation order."""
        return [*(self._present(p) for p in self._fixed.values()), *(self._present(p) for p in self._user.values())]

    def profile(self, token: str) -> Profile:
        """The profile ``token``; ``ter:NoProfile`` if there is none."""
        found = self._fixed.get(token) or self._user.get(token)
        if found is None:
            raise no_profile(token)
        return self._present(found)

    def _present(self, profile: Profile) -> Profile:
        """The profile as it is now: a fixed profile holds its camera's PTZ configuration while there is one."""
        if profile.fixed:
            camera = self._by_camera[tokens.split_camera(profile.token)]
            token = tokens.ptz_configuration(camera.id)
            return replace(profile, ptz=token if self._ptz_available(camera) else None)
        if profile.ptz is not None and self.configuration(PTZ, profile.ptz) is None:
            return replace(profile, ptz=None)
        return profile

    def configurations(self, kind: str) -> list[Any]:
        """Every configuration of ``kind`` in config order (PTZ: those of cameras that have PTZ now)."""
        if kind == PTZ:
            return [ref for ref in self._configs[PTZ].values() if self._ptz_available(ref.camera)]
        return list(self._configs[kind].values())

    def configuration(self, kind: str, token: str) -> Any:
        """The configuration ``token`` of ``kind``, or None."""
        found = self._configs[kind].get(token)
        if kind == PTZ and found is not None and not self._ptz_available(found.camera):
            return None
        return found

    def video_source_configuration(self, token: str) -> VideoSourceConfiguration:
        """A VideoSourceConfiguration; ``ter:NoConfig`` if there is none."""
        found = self._configs[VIDEO_SOURCE].get(token)
        if not isinstance(found, VideoSourceConfiguration):
            raise no_config(token)
        return found

    def use_counts(self) -> Counter[str]:
        """How many profiles hold each configuration token (UseCount)."""
        return Counter(token for profile in self.profiles() for token in _slots(profile).values() if token is not None)

    def compatible(self, kind: str, profile: Profile) -> list[Any]:
        """The configurations of ``kind`` that adding to ``profile`` would accept."""
        result = []
        for config in self.configurations(kind):
            candidate = profile.with_slots({kind: config.token})
            if profile.fixed and candidate != profile:
                continue
            if self._conflict(candidate) is None:
                result.append(config)
        return result

    def camera_of(self, profile: Profile) -> CameraConfig | None:
        """The camera whose configurations the profile holds, if any."""
        for kind in KINDS:
            token = profile.slot(kind)
            config = self._configs[kind].get(token) if token is not None else None
            if config is not None:
                return config.camera
        return None

    def stream_of(self, profile: Profile) -> tuple[CameraConfig, StreamConfig] | None:
        """The camera stream the profile's encoders come from, if it has an encoder."""
        for kind in (VIDEO_ENCODER, AUDIO_ENCODER):
            token = profile.slot(kind)
            config = self._configs[kind].get(token) if token is not None else None
            if isinstance(config, (VideoEncoderConfiguration, AudioEncoderConfiguration)):
                return config.camera, config.stream
        return None

    def ptz_element(self, profile: Profile, tag: str) -> _Element | None:
        """The profile's PTZ configuration from the PTZ hook, renamed to ``tag``, or None."""
        if profile.ptz is None or self._ptz_hook is None:
            return None
        ref = self._configs[PTZ].get(profile.ptz)
        if ref is None:
            return None
        element = self._ptz_hook(ref.camera)
        if element is None:
            return None
        element.tag = tag
        return element

    def ptz_camera(self, token: str) -> str | None:
        """For the PTZ service: the camera id whose PTZ configuration profile ``token`` holds.

        ``""`` for a profile without one, None when there is no such profile.
        """
        found = self._fixed.get(token) or self._user.get(token)
        if found is None:
            return None
        profile = self._present(found)
        if profile.ptz is None:
            return ""
        return self._configs[PTZ][profile.ptz].camera.id

    def _ptz_available(self, camera: CameraConfig) -> bool:
        return self._ptz_hook is not None and self._ptz_hook(camera) is not None

    # --- URIs -----------------------------------------------------------------------------

    def stream_uri(self, profile: Profile, host: str) -> str:
        """``rtsp://<host>:<rtsp port>/<camera id>/<stream>``; ``ter:IncompleteConfiguration`` without an encoder.

        ``host`` is ``RequestContext.host`` (advertise_host or the Host header); its port
        is the ONVIF one, so it is dropped (an IPv6 literal keeps its brackets).
        """
        found = self.stream_of(profile)
        if found is None:
            raise incomplete(profile.token, "has no encoder configuration")
        camera, stream = found
        return f"rtsp://{host_without_port(host)}:{self.rtsp_port}/{path_name(camera, stream)}"

    def snapshot_uri(self, profile: Profile, host: str) -> str:
        """The relay's snapshot proxy for the profile's camera; ``ter:IncompleteConfiguration`` without video."""
        if profile.video_source is None and profile.video_encoder is None:
            raise incomplete(profile.token, "has neither a video source nor a video encoder configuration")
        camera = self.camera_of(profile)
        assert camera is not None
        return f"http://{host}/snapshot/{camera.id}.jpg"

    # --- changes --------------------------------------------------------------------------

    async def create_profile(
        self, name: str, token: str | None = None, configurations: Iterable[tuple[str, str]] = ()
    ) -> Profile:
        """CreateProfile: a new non-fixed profile, saved.

        Faults ProfileExists, MaxNVTProfiles, NoConfig and ConfigurationConflict.
        """
        async with self._lock:
            _check_name(name)
            if token is not None:
                if not token.strip() or len(token) > MAX_NAME_LENGTH or not token.isprintable():
                    raise sender_fault(
                        "InvalidArgVal", reason=f"a profile token is 1 to {MAX_NAME_LENGTH} printable characters"
                    )
                if token in self._fixed or token in self._user:
                    raise sender_fault("InvalidArgVal", "ProfileExists", reason=f"profile {token!r} already exists")
            if len(self._fixed) + len(self._user) >= self.max_profiles:
                raise max_profiles_fault(self.max_profiles)
            next_number = self._next
            if token is None:
                while f"profile{next_number}" in self._user:
                    next_number += 1
                token = f"profile{next_number}"
                next_number += 1
            profile = self._apply(Profile(token, name, False), configurations)
            users = {**self._user, token: profile}
            await self._commit(users, next_number)
            self.log.info("media profile {token} ({name}) created", token=token, name=name)
            return profile

    async def delete_profile(self, token: str) -> None:
        """DeleteProfile: faults NoProfile, DeletionOfFixedProfile."""
        async with self._lock:
            if token in self._fixed:
                raise sender_fault("Action", "DeletionOfFixedProfile", reason=f"profile {token!r} is fixed")
            if token not in self._user:
                raise no_profile(token)
            users = {key: value for key, value in self._user.items() if key != token}
            await self._commit(users, self._next)
            self.log.info("media profile {token} deleted", token=token)

    async def change_profile(
        self, token: str, add: Iterable[tuple[str, str]] = (), remove: Iterable[str] = (), name: str | None = None
    ) -> Profile:
        """Add (kind, token) configurations, remove kinds and rename, all or nothing.

        Faults NoProfile, NoConfig and ConfigurationConflict (fixed profiles only accept
        what they already hold).
        """
        async with self._lock:
            current = self.profile(token)
            if name is not None:
                _check_name(name)
            changed = self._apply(current, add)
            changed = changed.with_slots({kind: None for kind in remove})
            if name is not None:
                changed = replace(changed, name=name)
            if changed == current:
                return current
            if current.fixed:
                raise receiver_fault(
                    "Action",
                    "ConfigurationConflict",
                    reason=f"profile {token!r} is fixed: it mirrors a camera stream; create a profile to combine others",
                )
            users = {**self._user, token: changed}
            await self._commit(users, self._next)
            self.log.info("media profile {token} changed", token=token)
            return changed

    def invalidate(self) -> None:
        """Say that something outside the model changed (e.g. the PTZ hook's answers): drop cached responses."""
        self.generation += 1

    def _apply(self, profile: Profile, configurations: Iterable[tuple[str, str]]) -> Profile:
        for kind, token in configurations:
            if kind not in KINDS or self.configuration(kind, token) is None:
                raise no_config(token, kind)
            profile = profile.with_slots({kind: token})
        conflict = self._conflict(profile)
        if conflict is not None:
            raise receiver_fault("Action", "ConfigurationConflict", reason=conflict)
        return profile

    def _conflict(self, profile: Profile) -> str | None:
        """Why the profile's configurations cannot stream together, or None."""
        cameras = set()
        streams = set()
        for kind in KINDS:
            token = profile.slot(kind)
            config = self._configs[kind].get(token) if token is not None else None
            if config is None:
                continue
            cameras.add(config.camera.id)
            if isinstance(config, (VideoEncoderConfiguration, AudioEncoderConfiguration)):
                streams.add(config.stream.name)
        if len(cameras) > 1:
            return "the configurations belong to different cameras: " + ", ".join(sorted(cameras))
        if len(streams) > 1:
            return "the video and audio encoders belong to different streams: " + ", ".join(sorted(streams))
        return None

    # --- persistence ----------------------------------------------------------------------

    def _load(self) -> None:
        saved = self._store.load(self._state_name, {})
        saved = saved if isinstance(saved, dict) else {}
        next_number = saved.get("next", 1)
        self._next = next_number if isinstance(next_number, int) and next_number > 0 else 1
        entries = saved.get("profiles", [])
        for entry in entries if isinstance(entries, list) else []:
            profile = self._restore(entry)
            if profile is not None:
                self._user[profile.token] = profile

    def _restore(self, entry: Any) -> Profile | None:
        if not isinstance(entry, dict) or not all(isinstance(entry.get(key), str) for key in ("token", "name")):
            self.log.warn("ignoring a malformed saved media profile")
            return None
        token, name = entry["token"], entry["name"]
        if token in self._fixed or token in self._user or not token or len(token) > MAX_NAME_LENGTH:
            self.log.warn("ignoring saved media profile {token}: its token is taken or invalid", token=token)
            return None
        profile = Profile(token, name[:MAX_NAME_LENGTH], False)
        for kind, field in _FIELDS.items():
            value = entry.get(field)
            if value is None:
                continue
            if not isinstance(value, str) or value not in self._configs[kind]:
                self.log.warn(
                    "saved media profile {token}: {kind} configuration {value} no longer exists; dropped it",
                    token=token, kind=kind, value=str(value),
                )
                continue
            candidate = profile.with_slots({kind: value})
            if self._conflict(candidate) is not None:
                self.log.warn(
                    "saved media profile {token}: {kind} configuration {value} conflicts with the others; dropped it",
                    token=token, kind=kind, value=value,
                )
                continue
            profile = candidate
        return profile

    async def _commit(self, users: dict[str, Profile], next_number: int) -> None:
        document = {
            "next": next_number,
            "profiles": [
                {"token": p.token, "name": p.name, **{field: getattr(p, field) for field in _FIELDS.values()}}
                for p in users.values()
            ],
        }
        try:
            await self._store.save(self._state_name, document)
        except StateError as exc:
            self.log.error("cannot save the media profiles: {error}", error=str(exc))
            raise receiver_fault("Action", reason="the media profiles could not be saved on the relay") from exc
        self._user = users
        self._next = next_number
        self.generation += 1


class ResponseCache:
    """Response fragments that only change with the model's generation and the key.

    The PTZ hook's answers are part of the model: whoever changes them (a camera's model
    detected late) calls ``MediaModel.invalidate()``, as the composition root does. The
    SOAP layer moves the returned element into its envelope, so callers get a deep copy;
    the cache is emptied when the generation changes or it grows past ``size``.
    """

    def __init__(self, model: MediaModel, size: int = 64) -> None:
        self._model = model
        self._size = size
        self._state: tuple[Any, ...] = ()
        self._entries: dict[tuple[Any, ...], _Element] = {}

    def reply_key(self, key: tuple[Any, ...]) -> tuple[Any, ...]:
        """``key`` with the model state: an ``Operation.reply_key`` for an answer cached under ``key``."""
        return (self._model.generation, *key)

    def get(self, key: tuple[Any, ...], build: Callable[[], _Element]) -> _Element:
        """A copy of the element cached under ``key``, built on first use."""
        state = (self._model.generation,)
        if state != self._state or len(self._entries) >= self._size:
            self._entries.clear()
            self._state = state
        element = self._entries.get(key)
        if element is None:
            element = self._entries[key] = build()
        return copy.deepcopy(element)


# --- what SetVideoEncoderConfiguration may change ----------------------------------------------

GOV_LENGTH_RANGE = (1, 300)
"""GOP lengths accepted: the camera's firmware sets its GOP, which the relay neither sees nor
changes, so any plausible value (up to 15 s at 20 fps) is accepted and has no effect."""


@dataclass(frozen=True)
class VideoEncoderSettings:
    """The values of a Set(Video)EncoderConfiguration request that matter to the relay."""

    name: str
    encoding: str
    width: int
    height: int
    frame_rate_limit: float | None
    encoding_interval: int | None
    gov_length: int | None


def check_video_encoder_settings(config: VideoEncoderConfiguration, wanted: VideoEncoderSettings) -> None:
    """Accept what the stream already is; ``ter:ConfigModify`` for what would need re-encoding.

    Quality and BitrateLimit are adapted (the Media spec allows that) rather than refused;
    a frame rate limit at or above the stream's frame rate is already met.
    """
    stream = config.stream
    problems = []
    if wanted.name != config.name:
        problems.append(f"the name is {config.name!r} (configuration names come from the relay config)")
    if wanted.encoding != config.encoding:
        problems.append(f"the encoding is {config.encoding}")
    if (wanted.width, wanted.height) != (stream.width, stream.height):
        problems.append(f"the resolution is {stream.width}x{stream.height}")
    if wanted.frame_rate_limit is not None and wanted.frame_rate_limit < stream.fps:
        problems.append(f"the frame rate is {stream.fps} fps")
    if wanted.encoding_interval is not None and wanted.encoding_interval != 1:
        problems.append("every frame is sent (EncodingInterval 1)")
    if wanted.gov_length is not None and not GOV_LENGTH_RANGE[0] <= wanted.gov_length <= GOV_LENGTH_RANGE[1]:
        problems.append(f"GovLength must lie in {GOV_LENGTH_RANGE[0]}..{GOV_LENGTH_RANGE[1]}")
    if problems:
        raise sender_fault(
            "InvalidArgVal",
            "ConfigModify",
            reason=f"the relay passes the camera stream through and cannot re-encode it: {'; '.join(problems)}",
        )


def read_video_encoder_settings(
    element: _Element, encoding_interval: int | None, gov_length: int | None
) -> VideoEncoderSettings:
    """The tt: fields Media and Media2 SetVideoEncoderConfiguration share, plus the two that differ."""

    def tt(local: str) -> str:
        return ns.q(ns.TT, local)

    rate = element.find(tt("RateControl"))
    return VideoEncoderSettings(
        name=(element.findtext(tt("Name")) or "").strip(),
        encoding=(element.findtext(tt("Encoding")) or "").strip(),
        width=parse_int(element.findtext(f"{tt('Resolution')}/{tt('Width')}"), "Width") or 0,
        height=parse_int(element.findtext(f"{tt('Resolution')}/{tt('Height')}"), "Height") or 0,
        frame_rate_limit=parse_float(
            rate.findtext(tt("FrameRateLimit")) if rate is not None else None, "FrameRateLimit"
        ),
        encoding_interval=encoding_interval,
        gov_length=gov_length,
    )


class MediaServiceBase:
    """What the Media (ver10) and Media2 (ver20) services share over one ``MediaModel``.

    Subclasses set ``NAMESPACE``, ``PATH``, ``VERSION`` and ``MAKER`` and provide
    ``_operations()`` and ``_capabilities()``.
    """

    NAMESPACE: str
    PATH: str
    VERSION: tuple[int, int]
    MAKER: Maker

    def __init__(self, model: MediaModel) -> None:
        self._model = model
        self._cache = ResponseCache(model)
        self._service: Service | None = None

    def service(self) -> Service:
        """The ``Service`` to hand to the SOAP server (built once)."""
        if self._service is None:
            self._service = Service(
                namespace=self.NAMESPACE,
                path=self.PATH,
                version=self.VERSION,
                operations=self._operations(),
                capabilities=lambda ctx: self._cache.get(("capabilities",), self._capabilities),
            )
        return self._service

    def _operations(self) -> dict[str, Operation]:
        raise NotImplementedError

    def _capabilities(self) -> _Element:
        raise NotImplementedError

    def _empty(self, response: str) -> Callable[[RequestContext], _Element]:
        maker = self.MAKER

        def empty(ctx: RequestContext) -> _Element:
            return maker(response)

        empty.__doc__ = f"{response[: -len('Response')]}: the relay has none."
        return empty


def parse_int(text: str | None, what: str) -> int | None:
    """An optional ``xs:int`` of a configuration; ``ter:ConfigModify`` when it is not one."""
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        reason = f"{what} {text.strip()[:20]!r} is not an integer"
        raise sender_fault("InvalidArgVal", "ConfigModify", reason=reason) from None


def parse_float(text: str | None, what: str) -> float | None:
    """An optional ``xs:float`` of a configuration; ``ter:ConfigModify`` when it is not one."""
    if text is None:
        return None
    try:
        return float(text.strip())
    except ValueError:
        reason = f"{what} {text.strip()[:20]!r} is not a number"
        raise sender_fault("InvalidArgVal", "ConfigModify", reason=reason) from None


# --- faults ----------------------------------------------------------------------------------


def no_profile(token: str) -> SoapFault:
    """``env:Sender/ter:InvalidArgVal/ter:NoProfile``."""
    return sender_fault("InvalidArgVal", "NoProfile", reason=f"Argument Value Invalid: no profile {token!r}")


def no_config(token: str, kind: str = "") -> SoapFault:
    """``env:Sender/ter:InvalidArgVal/ter:NoConfig``."""
    what = f"{kind} configuration" if kind else "configuration"
    return sender_fault("InvalidArgVal", "NoConfig", reason=f"Argument Value Invalid: no {what} {token!r}")


def incomplete(token: str, why: str) -> SoapFault:
    """``env:Receiver/ter:Action/ter:IncompleteConfiguration``."""
    return receiver_fault("Action", "IncompleteConfiguration", reason=f"profile {token!r} {why}")


def max_profiles_fault(limit: int) -> SoapFault:
    """``env:Receiver/ter:Action/ter:MaxNVTProfiles``."""
    return receiver_fault(
        "Action", "MaxNVTProfiles", reason=f"the device supports at most {limit} media profiles"
    )


def _check_name(name: str) -> None:
    if len(name) > MAX_NAME_LENGTH:
        raise sender_fault("InvalidArgVal", reason=f"a profile name is at most {MAX_NAME_LENGTH} characters")


def _name(text: str) -> str:
    return text[:MAX_NAME_LENGTH]


def host_without_port(host: str) -> str:
    """``RequestContext.host`` without its port: ``example:8080`` → ``example``, ``[::1]:80`` → ``[::1]``."""
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


# --- elements shared by Media and Media2 -------------------------------------------------------


def video_source_element(tag: str, source: VideoSource) -> _Element:
    """A ``tt:VideoSource`` named ``tag``."""
    return TT(
        tag,
        {"token": source.token},
        TT.Framerate(str(source.framerate)),
        TT.Resolution(TT.Width(str(source.width)), TT.Height(str(source.height))),
    )


def video_source_configuration_element(tag: str, config: VideoSourceConfiguration, use_count: int) -> _Element:
    """A ``tt:VideoSourceConfiguration`` named ``tag``; Bounds cover the whole picture."""
    source = config.source
    return TT(
        tag,
        {"token": config.token},
        TT.Name(config.name),
        TT.UseCount(str(use_count)),
        TT.SourceToken(source.token),
        TT.Bounds({"x": "0", "y": "0", "width": str(source.width), "height": str(source.height)}),
    )


def audio_source_element(tag: str, source: AudioSource) -> _Element:
    """A ``tt:AudioSource`` named ``tag``."""
    return TT(tag, {"token": source.token}, TT.Channels(str(source.channels)))


def audio_source_configuration_element(tag: str, config: AudioSourceConfiguration, use_count: int) -> _Element:
    """A ``tt:AudioSourceConfiguration`` named ``tag``."""
    return TT(
        tag,
        {"token": config.token},
        TT.Name(config.name),
        TT.UseCount(str(use_count)),
        TT.SourceToken(config.source.token),
    )


def no_multicast() -> _Element:
    """The ``tt:Multicast`` of a configuration that is never multicast (address 0.0.0.0, port 0)."""
    return TT.Multicast(
        TT.Address(TT.Type("IPv4"), TT.IPv4Address("0.0.0.0")),
        TT.Port("0"),
        TT.TTL("0"),
        TT.AutoStart("false"),
    )


def media_uri_element(tag: str, uri: str) -> _Element:
    """A ``tt:MediaUri`` named ``tag``: valid indefinitely, across connects and reboots."""
    return TT(
        tag,
        TT.Uri(uri),
        TT.InvalidAfterConnect("false"),
        TT.InvalidAfterReboot("false"),
        TT.Timeout("PT0S"),
    )


def int_range(tag: str, low: int, high: int) -> _Element:
    """A ``tt:IntRange`` named ``tag``."""
    return TT(tag, TT.Min(str(low)), TT.Max(str(high)))


def video_source_configuration_options_element(
    tag: str, configs: Sequence[VideoSourceConfiguration], max_profiles: int
) -> _Element:
    """``tt:VideoSourceConfigurationOptions`` covering ``configs``: only the whole picture is possible."""
    widths = [c.source.width for c in configs]
    heights = [c.source.height for c in configs]
    return TT(
        tag,
        {"MaximumNumberOfProfiles": str(max_profiles)},
        TT.BoundsRange(
            int_range(ns.q(ns.TT, "XRange"), 0, 0),
            int_range(ns.q(ns.TT, "YRange"), 0, 0),
            int_range(ns.q(ns.TT, "WidthRange"), min(widths), max(widths)),
            int_range(ns.q(ns.TT, "HeightRange"), min(heights), max(heights)),
        ),
        *(TT.VideoSourceTokensAvailable(c.source.token) for c in configs),
    )


def optional_text(body: _Element, namespace: str, name: str) -> str | None:
    """The stripped text of an optional request element, or None when absent."""
    element = body.find(ns.q(namespace, name))
    return None if element is None else (element.text or "").strip()


def required_text(body: _Element, namespace: str, name: str) -> str:
    """The stripped text of a required request element; ``ter:InvalidArgs`` when absent."""
    value = optional_text(body, namespace, name)
    if value is None:
        raise sender_fault("InvalidArgs", reason=f"{etree.QName(body).localname} needs {name}")
    return value
