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
from dataclasses import replace
from typing import Any, Callable, Iterable, Sequence

from lxml.etree import _Element
from twisted.logger import Logger

from atomrelay.config import CameraConfig, StreamConfig
from atomrelay.mediamtx.paths import path_name
from atomrelay.onvif import tokens
from atomrelay.onvif.media_types import (
    AUDIO_ENCODER,
    AUDIO_SOURCE,
    KINDS,
    MAX_NAME_LENGTH,
    PTZ,
    SLOT_FIELDS,
    STATE_NAME,
    VIDEO_ENCODER,
    VIDEO_SOURCE,
    AudioEncoderConfiguration,
    AudioSource,
    AudioSourceConfiguration,
    Configuration,
    Profile,
    PTZConfigurationRef,
    PtzHook,
    VideoEncoderConfiguration,
    VideoSource,
    VideoSourceConfiguration,
    audio_codec,
    check_name,
    clip_name,
    host_without_port,
    incomplete,
    max_profiles_fault,
    no_config,
    no_profile,
    profile_slots,
)
from atomrelay.state import StateError, StateStore
from atomrelay.xml import ns
from atomrelay.xml.soap import receiver_fault, sender_fault


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
        self._lock = store.change_lock()
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
        self._unusable: dict[str, dict[str, str]] = {}
        """Saved slots this config cannot fill (a camera a reload took out), by profile token and slot field: they
        are saved again with their profile while its slot stays empty, so the camera's return brings them back."""
        self._next = 1
        self._load()

    def _add_camera(self, camera: CameraConfig) -> list[Profile]:
        largest = max(camera.streams, key=lambda s: (s.width * s.height, s.fps))
        source = VideoSource(
            tokens.video_source(camera.id), camera, largest.width, largest.height, max(s.fps for s in camera.streams)
        )
        self.video_sources.append(source)
        vsc = VideoSourceConfiguration(tokens.video_source_configuration(camera.id), clip_name(camera.name), camera, source)
        self._configs[VIDEO_SOURCE][vsc.token] = vsc
        audio: AudioSourceConfiguration | None = None
        if any(audio_codec(stream) is not None for stream in camera.streams):
            microphone = AudioSource(tokens.audio_source(camera.id), camera)
            self.audio_sources.append(microphone)
            audio = AudioSourceConfiguration(
                tokens.audio_source_configuration(camera.id), clip_name(camera.name), camera, microphone
            )
            self._configs[AUDIO_SOURCE][audio.token] = audio
        profiles = []
        for stream in camera.streams:
            label = clip_name(f"{camera.name} {stream.name}")
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
        return Counter(token for profile in self.profiles() for token in profile_slots(profile).values() if token is not None)

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

    def ptz_element(self, profile: Profile, tag: str, use_count: int) -> _Element | None:
        """The profile's PTZ configuration from the PTZ hook, renamed to ``tag``, with ``use_count`` (the profiles
        holding it, ``use_counts``) as its UseCount, or None."""
        if profile.ptz is None or self._ptz_hook is None:
            return None
        ref = self._configs[PTZ].get(profile.ptz)
        if ref is None:
            return None
        element = self._ptz_hook(ref.camera)
        if element is None:
            return None
        element.tag = tag
        count = element.find(ns.q(ns.TT, "UseCount"))
        if count is not None:
            count.text = str(use_count)
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
            check_name(name)
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
                check_name(name)
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
        for kind, field in SLOT_FIELDS.items():
            value = entry.get(field)
            if value is None:
                continue
            if not isinstance(value, str):
                self.log.warn("saved media profile {token}: its {kind} slot is malformed; dropped it",
                              token=token, kind=kind)
                continue
            if value not in self._configs[kind]:
                self.log.warn(
                    "saved media profile {token}: {kind} configuration {value} does not exist now; left empty "
                    "(kept in the saved profile)", token=token, kind=kind, value=value,
                )
                self._unusable.setdefault(token, {})[field] = value
                continue
            candidate = profile.with_slots({kind: value})
            if self._conflict(candidate) is not None:
                self.log.warn(
                    "saved media profile {token}: {kind} configuration {value} conflicts with the others; left empty "
                    "(kept in the saved profile)", token=token, kind=kind, value=value,
                )
                self._unusable.setdefault(token, {})[field] = value
                continue
            profile = candidate
        return profile

    async def _commit(self, users: dict[str, Profile], next_number: int) -> None:
        document = {
            "next": next_number,
            "profiles": [{"token": p.token, "name": p.name, **self._saved_slots(p)} for p in users.values()],
        }
        try:
            await self._store.commit(self._state_name, document, lambda: self._use(users, next_number))
        except StateError as exc:
            self.log.error("cannot save the media profiles: {error}", error=str(exc))
            raise receiver_fault("Action", reason="the media profiles could not be saved on the relay") from exc

    def _saved_slots(self, profile: Profile) -> dict[str, str | None]:
        unusable = self._unusable.get(profile.token, {})
        return {field: getattr(profile, field) or unusable.get(field) for field in SLOT_FIELDS.values()}

    def _use(self, users: dict[str, Profile], next_number: int) -> None:
        # A slot filled since, or a profile deleted, ends what was kept for it.
        self._unusable = {
            token: kept for token, fields in self._unusable.items() if token in users
            if (kept := {field: value for field, value in fields.items() if getattr(users[token], field) is None})
        }
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
