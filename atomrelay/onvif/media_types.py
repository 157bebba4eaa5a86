"""The media model's vocabulary: configuration kinds, the configurations and profiles, and their faults."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping, Union

from lxml.etree import _Element

from atomrelay.config import CameraConfig, StreamConfig
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, SoapFault, receiver_fault, sender_fault

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
        return profile_slots(self)[kind]

    def with_slots(self, slots: Mapping[str, str | None]) -> Profile:
        """This profile with the given slots replaced."""
        changes: dict[str, Any] = {SLOT_FIELDS[kind]: token for kind, token in slots.items()}
        return replace(self, **changes)


SLOT_FIELDS = {  # the Profile field that holds each kind of configuration
    VIDEO_SOURCE: "video_source",
    AUDIO_SOURCE: "audio_source",
    VIDEO_ENCODER: "video_encoder",
    AUDIO_ENCODER: "audio_encoder",
    PTZ: "ptz",
}


def profile_slots(profile: Profile) -> dict[str, str | None]:
    """The configuration token in each of ``profile``'s slots, by kind (None where empty)."""
    return {kind: getattr(profile, field) for kind, field in SLOT_FIELDS.items()}


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


def check_name(name: str) -> None:
    """``ter:InvalidArgVal`` for a profile name longer than ``tt:Name`` allows."""
    if len(name) > MAX_NAME_LENGTH:
        raise sender_fault("InvalidArgVal", reason=f"a profile name is at most {MAX_NAME_LENGTH} characters")


def clip_name(text: str) -> str:
    """``text`` cut to the length a ``tt:Name`` may have."""
    return text[:MAX_NAME_LENGTH]


def host_without_port(host: str) -> str:
    """``RequestContext.host`` without its port: ``example:8080`` → ``example``, ``[::1]:80`` → ``[::1]``."""
    if host.startswith("["):
        return host[: host.index("]") + 1] if "]" in host else host
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host
