"""The ONVIF Media service (ver10, ``trt``) at ``/onvif/media_service``.

What Home Assistant, Frigate, UniFi Protect, Synology and Blue Iris use to find the
streams: profiles, their sources and encoder configurations, stream and snapshot URIs.
Media1 has no name for H.265, so H.265 streams (and any profile holding one) are left
out here rather than mislabelled; they are served through Media2. Likewise audio the
ver10 ``tt:AudioEncoding`` cannot name (Opus, L16), and the audio of H.265 streams, are left
out of profiles and lists.

Every operation's access class is the one its ``role="access"`` paragraph in the Media
spec gives, except CreateProfile: Synology Surveillance Station first sends it without
credentials and reports a wrong password on a NotAuthorized answer, so the table says
PRE_AUTH and the handler refuses anonymous callers with the Receiver fault
``ter:Action/ter:MaxNVTProfiles`` and callers below ACTUATE with NotAuthorized.
Responses follow the element order of ``media.wsdl`` and ``onvif.xsd``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Awaitable, Callable, Iterable, Sequence

from lxml.etree import _Element
from twisted.logger import Logger

from atomrelay.auth.policy import AccessClass, allowed
from atomrelay.onvif.base import Handler, Operation, RequestContext
from atomrelay.onvif.media_common import (
    GOV_LENGTH_RANGE,
    MediaServiceBase,
    audio_source_configuration_element,
    audio_source_element,
    check_video_encoder_settings,
    int_range,
    media_uri_element,
    no_multicast,
    optional_text,
    parse_int,
    read_video_encoder_settings,
    required_text,
    video_source_configuration_element,
    video_source_configuration_options_element,
    video_source_element,
)
from atomrelay.onvif.media_types import (
    AUDIO_ENCODER,
    AUDIO_SOURCE,
    PTZ,
    QUALITY,
    SESSION_TIMEOUT,
    TT,
    VIDEO_ENCODER,
    VIDEO_SOURCE,
    AudioEncoderConfiguration,
    Profile,
    VideoEncoderConfiguration,
    VideoSourceConfiguration,
    no_config,
    no_profile,
)
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, SoapFault, receiver_fault, sender_fault
from atomrelay.xml.xstypes import xs_bool

PATH = "/onvif/media_service"
VERSION = (21, 6)
"""The release of ``ver10/media/wsdl/media.wsdl`` this service follows (21.06)."""
H264_PROFILES = ("Baseline", "Main", "High")
"""H.264 profiles accepted in SetVideoEncoderConfiguration: the camera picks its own."""
UNICAST_PROTOCOLS = frozenset({"UDP", "RTSP"})
"""StreamSetup transports answered with the mediamtx RTSP URI: RTSP's SETUP picks the transport, and mediamtx offers
TCP, which clients asking for UDP fall back to. HTTP is refused: Media says its URI must use the web service's port,
and no stream passes through the relay."""

TRT = Maker(ns.TRT, {"trt": ns.TRT, "tt": ns.TT})
_NOT_AUTHORIZED = "Sender not authorized"


def _tt(local: str) -> str:
    return ns.q(ns.TT, local)


def _trt(local: str) -> str:
    return ns.q(ns.TRT, local)


class MediaService(MediaServiceBase):
    """The Media (ver10) service of one ONVIF device, over the device's ``MediaModel``."""

    log = Logger()
    NAMESPACE = ns.TRT
    PATH = PATH
    VERSION = VERSION
    MAKER = TRT

    def _operations(self) -> dict[str, Operation]:
        read, actuate = AccessClass.READ_MEDIA, AccessClass.ACTUATE
        table: dict[str, tuple[Handler, AccessClass]] = {
            "GetServiceCapabilities": (self.get_service_capabilities, AccessClass.PRE_AUTH),
            "GetProfiles": (self.get_profiles, read),
            "GetProfile": (self.get_profile, read),
            "CreateProfile": (self.create_profile, AccessClass.PRE_AUTH),
            "DeleteProfile": (self.delete_profile, actuate),
            "GetVideoSources": (self.get_video_sources, read),
            "GetVideoSourceConfigurations": (self.get_video_source_configurations, read),
            "GetVideoSourceConfiguration": (self.get_video_source_configuration, read),
            "GetCompatibleVideoSourceConfigurations": (self.get_compatible_video_source_configurations, read),
            "GetVideoSourceConfigurationOptions": (self.get_video_source_configuration_options, read),
            "GetVideoEncoderConfigurations": (self.get_video_encoder_configurations, read),
            "GetVideoEncoderConfiguration": (self.get_video_encoder_configuration, read),
            "GetCompatibleVideoEncoderConfigurations": (self.get_compatible_video_encoder_configurations, read),
            "GetVideoEncoderConfigurationOptions": (self.get_video_encoder_configuration_options, read),
            "SetVideoEncoderConfiguration": (self.set_video_encoder_configuration, actuate),
            "GetGuaranteedNumberOfVideoEncoderInstances": (self.get_guaranteed_number_of_video_encoder_instances, read),
            "GetAudioSources": (self.get_audio_sources, read),
            "GetAudioSourceConfigurations": (self.get_audio_source_configurations, read),
            "GetAudioSourceConfiguration": (self.get_audio_source_configuration, read),
            "GetCompatibleAudioSourceConfigurations": (self.get_compatible_audio_source_configurations, read),
            "GetAudioEncoderConfigurations": (self.get_audio_encoder_configurations, read),
            "GetAudioEncoderConfiguration": (self.get_audio_encoder_configuration, read),
            "GetCompatibleAudioEncoderConfigurations": (self.get_compatible_audio_encoder_configurations, read),
            "GetAudioEncoderConfigurationOptions": (self.get_audio_encoder_configuration_options, read),
            "GetMetadataConfigurations": (self._empty("GetMetadataConfigurationsResponse"), read),
            "GetVideoAnalyticsConfigurations": (self._empty("GetVideoAnalyticsConfigurationsResponse"), read),
            "GetAudioOutputs": (self._empty("GetAudioOutputsResponse"), read),
            "GetAudioOutputConfigurations": (self._empty("GetAudioOutputConfigurationsResponse"), read),
            "GetOSDs": (self._empty("GetOSDsResponse"), read),
            "GetStreamUri": (self.get_stream_uri, read),
            "GetSnapshotUri": (self.get_snapshot_uri, read),
        }
        for kind, name in _ADD_REMOVE:
            table[f"Add{name}Configuration"] = (self._adder(kind), actuate)
            table[f"Remove{name}Configuration"] = (self._remover(kind), actuate)
        operations = {name: Operation(handler, access) for name, (handler, access) in table.items()}
        operations["GetProfiles"] = Operation(
            self.get_profiles, read, reply_key=lambda ctx: self._cache.reply_key(("GetProfiles",))
        )
        return operations

    # --- what Media1 can show ----------------------------------------------------------

    def _visible(self, profile: Profile) -> bool:
        """Media1 shows a profile unless its video encoder is one it cannot name (H.265)."""
        token = profile.video_encoder
        return token is None or self._media1_config(VIDEO_ENCODER, token) is not None

    def _media1_config(self, kind: str, token: str) -> Any:
        """The configuration if Media1 can express it, else None."""
        config = self._model.configuration(kind, token)
        if isinstance(config, VideoEncoderConfiguration) and config.encoding != "H264":
            return None
        if isinstance(config, AudioEncoderConfiguration):
            if config.codec.media1 is None or config.stream.codec != "h264":
                return None
        return config

    def _media1_configs(self, kind: str, configs: Iterable[Any] | None = None) -> list[Any]:
        every = self._model.configurations(kind) if configs is None else configs
        return [c for c in every if self._media1_config(kind, c.token) is not None]

    def _profile(self, token: str) -> Profile:
        profile = self._model.profile(token)
        if not self._visible(profile):
            raise no_profile(token)
        return profile

    def _config(self, kind: str, token: str) -> Any:
        config = self._media1_config(kind, token)
        if config is None:
            raise no_config(token, kind)
        return config

    # --- elements --------------------------------------------------------------------------

    def _profile_element(self, tag: str, profile: Profile, counts: Counter[str]) -> _Element:
        parts: list[_Element] = [TT.Name(profile.name)]
        model = self._model
        if profile.video_source is not None:
            vsc = model.configuration(VIDEO_SOURCE, profile.video_source)
            parts.append(video_source_configuration_element(_tt("VideoSourceConfiguration"), vsc, counts[vsc.token]))
        if profile.audio_source is not None:
            asc = model.configuration(AUDIO_SOURCE, profile.audio_source)
            parts.append(audio_source_configuration_element(_tt("AudioSourceConfiguration"), asc, counts[asc.token]))
        if profile.video_encoder is not None:
            vec = model.configuration(VIDEO_ENCODER, profile.video_encoder)
            parts.append(_video_encoder_element(_tt("VideoEncoderConfiguration"), vec, counts[vec.token]))
        aec = self._media1_config(AUDIO_ENCODER, profile.audio_encoder) if profile.audio_encoder else None
        if aec is not None:
            parts.append(_audio_encoder_element(_tt("AudioEncoderConfiguration"), aec, counts[aec.token]))
        ptz = model.ptz_element(profile, _tt("PTZConfiguration"), counts[profile.ptz] if profile.ptz else 0)
        if ptz is not None:
            parts.append(ptz)
        return TRT(tag, {"token": profile.token, "fixed": xs_bool(profile.fixed)}, *parts)

    def _configuration_list(self, response: str, kind: str, configs: Sequence[Any]) -> _Element:
        counts = self._model.use_counts()
        return TRT(response, *(_element(_trt("Configurations"), kind, c, counts[c.token]) for c in configs))

    def _capabilities(self) -> _Element:
        return TRT.Capabilities(
            {
                "SnapshotUri": "true",
                "Rotation": "false",
                "VideoSourceMode": "false",
                "OSD": "false",
                "TemporaryOSDText": "false",
                "EXICompression": "false",
            },
            TRT.ProfileCapabilities({"MaximumNumberOfProfiles": str(self._model.max_profiles)}),
            TRT.StreamingCapabilities(
                {
                    "RTPMulticast": "false",
                    "RTP_TCP": "false",
                    "RTP_RTSP_TCP": "true",
                    "NonAggregateControl": "false",
                    "NoRTSPStreaming": "false",
                }
            ),
        )

    # --- capabilities and profiles ------------------------------------------------------

    def get_service_capabilities(self, ctx: RequestContext) -> _Element:
        """GetServiceCapabilities: snapshots yes, RTP/RTSP/TCP only, the profile limit."""
        return TRT.GetServiceCapabilitiesResponse(self._cache.get(("capabilities",), self._capabilities))

    def get_profiles(self, ctx: RequestContext) -> _Element:
        """GetProfiles: every profile Media1 can show, fixed ones first."""

        def build() -> _Element:
            counts = self._model.use_counts()
            return TRT.GetProfilesResponse(
                *(
                    self._profile_element(_trt("Profiles"), p, counts)
                    for p in self._model.profiles()
                    if self._visible(p)
                )
            )

        return self._cache.get(("GetProfiles",), build)

    def get_profile(self, ctx: RequestContext) -> _Element:
        """GetProfile: one profile; ``ter:NoProfile`` for an unknown (or H.265) one."""
        profile = self._profile(required_text(ctx.body, ns.TRT, "ProfileToken"))
        return self._cache.get(
            ("GetProfile", profile.token),
            lambda: TRT.GetProfileResponse(self._profile_element(_trt("Profile"), profile, self._model.use_counts())),
        )

    async def create_profile(self, ctx: RequestContext) -> _Element:
        """CreateProfile: an empty non-fixed profile (anonymous callers get ``ter:MaxNVTProfiles``)."""
        if ctx.caller.anonymous:
            self.log.info(
                "refused CreateProfile without valid credentials from {remote} (MaxNVTProfiles, as Synology expects)",
                remote=ctx.remote,
            )
            raise receiver_fault(
                "Action", "MaxNVTProfiles", reason="media profiles can only be created with valid credentials"
            )
        if not allowed(ctx.caller.level, AccessClass.ACTUATE):
            raise SoapFault(
                "Sender",
                ("NotAuthorized",),
                f"{_NOT_AUTHORIZED}: the {ctx.caller.level} user level may not call CreateProfile",
                http_status=400,
            )
        name = required_text(ctx.body, ns.TRT, "Name")
        token = optional_text(ctx.body, ns.TRT, "Token") or None
        profile = await self._model.create_profile(name, token)
        return TRT.CreateProfileResponse(self._profile_element(_trt("Profile"), profile, self._model.use_counts()))

    async def delete_profile(self, ctx: RequestContext) -> _Element:
        """DeleteProfile: user-made profiles only (``ter:DeletionOfFixedProfile``)."""
        token = required_text(ctx.body, ns.TRT, "ProfileToken")
        self._profile(token)
        await self._model.delete_profile(token)
        return TRT.DeleteProfileResponse()

    def _adder(self, kind: str) -> Callable[[RequestContext], Awaitable[_Element]]:
        response = f"Add{dict(_ADD_REMOVE)[kind]}ConfigurationResponse"

        async def add(ctx: RequestContext) -> _Element:
            profile = self._profile(required_text(ctx.body, ns.TRT, "ProfileToken"))
            config = self._config(kind, required_text(ctx.body, ns.TRT, "ConfigurationToken"))
            await self._model.change_profile(profile.token, add=[(kind, config.token)])
            return TRT(response)

        add.__doc__ = f"Add{dict(_ADD_REMOVE)[kind]}Configuration: put the configuration into a profile."
        return add

    def _remover(self, kind: str) -> Callable[[RequestContext], Awaitable[_Element]]:
        response = f"Remove{dict(_ADD_REMOVE)[kind]}ConfigurationResponse"

        async def remove(ctx: RequestContext) -> _Element:
            profile = self._profile(required_text(ctx.body, ns.TRT, "ProfileToken"))
            await self._model.change_profile(profile.token, remove=[kind])
            return TRT(response)

        remove.__doc__ = f"Remove{dict(_ADD_REMOVE)[kind]}Configuration: take that kind out of a profile."
        return remove

    # --- video --------------------------------------------------------------------------------

    def get_video_sources(self, ctx: RequestContext) -> _Element:
        """GetVideoSources: one per camera."""
        return self._cache.get(
            ("GetVideoSources",),
            lambda: TRT.GetVideoSourcesResponse(
                *(video_source_element(_trt("VideoSources"), s) for s in self._model.video_sources)
            ),
        )

    def get_video_source_configurations(self, ctx: RequestContext) -> _Element:
        """GetVideoSourceConfigurations: one per camera."""
        return self._cache.get(
            ("GetVideoSourceConfigurations",),
            lambda: self._configuration_list(
                "GetVideoSourceConfigurationsResponse", VIDEO_SOURCE, self._model.configurations(VIDEO_SOURCE)
            ),
        )

    def get_video_source_configuration(self, ctx: RequestContext) -> _Element:
        """GetVideoSourceConfiguration: one by token."""
        config = self._config(VIDEO_SOURCE, required_text(ctx.body, ns.TRT, "ConfigurationToken"))
        counts = self._model.use_counts()
        return TRT.GetVideoSourceConfigurationResponse(
            video_source_configuration_element(_trt("Configuration"), config, counts[config.token])
        )

    def get_compatible_video_source_configurations(self, ctx: RequestContext) -> _Element:
        """GetCompatibleVideoSourceConfigurations: those AddVideoSourceConfiguration would accept."""
        return self._compatible(ctx, "GetCompatibleVideoSourceConfigurationsResponse", VIDEO_SOURCE)

    def get_video_source_configuration_options(self, ctx: RequestContext) -> _Element:
        """GetVideoSourceConfigurationOptions: only the whole picture of the camera(s)."""
        configs: list[VideoSourceConfiguration] = self._option_targets(ctx, VIDEO_SOURCE)
        if not configs:
            configs = self._model.configurations(VIDEO_SOURCE)
        return TRT.GetVideoSourceConfigurationOptionsResponse(
            video_source_configuration_options_element(_trt("Options"), configs, self._model.max_profiles)
        )

    def get_video_encoder_configurations(self, ctx: RequestContext) -> _Element:
        """GetVideoEncoderConfigurations: one per H.264 camera stream."""
        return self._cache.get(
            ("GetVideoEncoderConfigurations",),
            lambda: self._configuration_list(
                "GetVideoEncoderConfigurationsResponse", VIDEO_ENCODER, self._media1_configs(VIDEO_ENCODER)
            ),
        )

    def get_video_encoder_configuration(self, ctx: RequestContext) -> _Element:
        """GetVideoEncoderConfiguration: one by token (H.264 only)."""
        config = self._config(VIDEO_ENCODER, required_text(ctx.body, ns.TRT, "ConfigurationToken"))
        counts = self._model.use_counts()
        return TRT.GetVideoEncoderConfigurationResponse(
            _video_encoder_element(_trt("Configuration"), config, counts[config.token])
        )

    def get_compatible_video_encoder_configurations(self, ctx: RequestContext) -> _Element:
        """GetCompatibleVideoEncoderConfigurations: those AddVideoEncoderConfiguration would accept."""
        return self._compatible(ctx, "GetCompatibleVideoEncoderConfigurationsResponse", VIDEO_ENCODER)

    def get_video_encoder_configuration_options(self, ctx: RequestContext) -> _Element:
        """GetVideoEncoderConfigurationOptions: exactly what the stream(s) are; the relay cannot re-encode."""
        configs: list[VideoEncoderConfiguration] = self._option_targets(ctx, VIDEO_ENCODER)
        key = ("GetVideoEncoderConfigurationOptions", tuple(c.token for c in configs))
        return self._cache.get(key, lambda: TRT.GetVideoEncoderConfigurationOptionsResponse(_encoder_options(configs)))

    def set_video_encoder_configuration(self, ctx: RequestContext) -> _Element:
        """SetVideoEncoderConfiguration: accept the current values, ``ter:ConfigModify`` for anything else."""
        element = ctx.body.find(_trt("Configuration"))
        if element is None:
            raise sender_fault("InvalidArgs", reason="SetVideoEncoderConfiguration needs Configuration")
        config = self._config(VIDEO_ENCODER, (element.get("token") or "").strip())
        rate = element.find(_tt("RateControl"))
        h264 = element.find(_tt("H264"))
        wanted = read_video_encoder_settings(
            element,
            encoding_interval=parse_int(
                rate.findtext(_tt("EncodingInterval")) if rate is not None else None, "EncodingInterval"
            ),
            gov_length=parse_int(h264.findtext(_tt("GovLength")) if h264 is not None else None, "GovLength"),
        )
        check_video_encoder_settings(config, wanted)
        return TRT.SetVideoEncoderConfigurationResponse()

    def get_guaranteed_number_of_video_encoder_instances(self, ctx: RequestContext) -> _Element:
        """GetGuaranteedNumberOfVideoEncoderInstances: the camera's H.264 streams (mediamtx serves any reader count)."""
        source = self._config(VIDEO_SOURCE, required_text(ctx.body, ns.TRT, "ConfigurationToken"))
        streams = [c for c in self._media1_configs(VIDEO_ENCODER) if c.camera.id == source.camera.id]
        return TRT.GetGuaranteedNumberOfVideoEncoderInstancesResponse(
            TRT.TotalNumber(str(len(streams))), TRT.H264(str(len(streams)))
        )

    # --- audio --------------------------------------------------------------------------------

    def get_audio_sources(self, ctx: RequestContext) -> _Element:
        """GetAudioSources: one per camera with audio."""
        return self._cache.get(
            ("GetAudioSources",),
            lambda: TRT.GetAudioSourcesResponse(
                *(audio_source_element(_trt("AudioSources"), s) for s in self._model.audio_sources)
            ),
        )

    def get_audio_source_configurations(self, ctx: RequestContext) -> _Element:
        """GetAudioSourceConfigurations: one per camera with audio."""
        return self._cache.get(
            ("GetAudioSourceConfigurations",),
            lambda: self._configuration_list(
                "GetAudioSourceConfigurationsResponse", AUDIO_SOURCE, self._model.configurations(AUDIO_SOURCE)
            ),
        )

    def get_audio_source_configuration(self, ctx: RequestContext) -> _Element:
        """GetAudioSourceConfiguration: one by token."""
        config = self._config(AUDIO_SOURCE, required_text(ctx.body, ns.TRT, "ConfigurationToken"))
        counts = self._model.use_counts()
        return TRT.GetAudioSourceConfigurationResponse(
            audio_source_configuration_element(_trt("Configuration"), config, counts[config.token])
        )

    def get_compatible_audio_source_configurations(self, ctx: RequestContext) -> _Element:
        """GetCompatibleAudioSourceConfigurations: those AddAudioSourceConfiguration would accept."""
        return self._compatible(ctx, "GetCompatibleAudioSourceConfigurationsResponse", AUDIO_SOURCE)

    def get_audio_encoder_configurations(self, ctx: RequestContext) -> _Element:
        """GetAudioEncoderConfigurations: the streams whose audio Media1 can name (G.711, AAC)."""
        return self._cache.get(
            ("GetAudioEncoderConfigurations",),
            lambda: self._configuration_list(
                "GetAudioEncoderConfigurationsResponse", AUDIO_ENCODER, self._media1_configs(AUDIO_ENCODER)
            ),
        )

    def get_audio_encoder_configuration(self, ctx: RequestContext) -> _Element:
        """GetAudioEncoderConfiguration: one by token."""
        config = self._config(AUDIO_ENCODER, required_text(ctx.body, ns.TRT, "ConfigurationToken"))
        counts = self._model.use_counts()
        return TRT.GetAudioEncoderConfigurationResponse(
            _audio_encoder_element(_trt("Configuration"), config, counts[config.token])
        )

    def get_compatible_audio_encoder_configurations(self, ctx: RequestContext) -> _Element:
        """GetCompatibleAudioEncoderConfigurations: those AddAudioEncoderConfiguration would accept."""
        return self._compatible(ctx, "GetCompatibleAudioEncoderConfigurationsResponse", AUDIO_ENCODER)

    def get_audio_encoder_configuration_options(self, ctx: RequestContext) -> _Element:
        """GetAudioEncoderConfigurationOptions: per encoding, the bitrates and sample rates the streams have."""
        configs: list[AudioEncoderConfiguration] = self._option_targets(ctx, AUDIO_ENCODER)
        by_encoding: dict[str, tuple[set[int], set[int]]] = {}
        for config in configs:
            assert config.codec.media1 is not None
            bitrates, rates = by_encoding.setdefault(config.codec.media1, (set(), set()))
            bitrates.add(config.codec.bitrate)
            rates.add(config.codec.sample_rate_khz)
        return TRT.GetAudioEncoderConfigurationOptionsResponse(
            TRT.Options(
                *(
                    TT.Options(
                        TT.Encoding(encoding),
                        TT.BitrateList(*(TT.Items(str(b)) for b in sorted(bitrates))),
                        TT.SampleRateList(*(TT.Items(str(r)) for r in sorted(rates))),
                    )
                    for encoding, (bitrates, rates) in by_encoding.items()
                )
            )
        )

    # --- URIs -----------------------------------------------------------------------------------

    def get_stream_uri(self, ctx: RequestContext) -> _Element:
        """GetStreamUri: the mediamtx RTSP URI for RTP unicast over RTSP or UDP; HTTP tunnelling and multicast are
        refused."""
        setup = ctx.body.find(_trt("StreamSetup"))
        if setup is None:
            raise sender_fault("InvalidArgs", reason="GetStreamUri needs StreamSetup")
        stream_type = (setup.findtext(_tt("Stream")) or "").strip()
        protocol = (setup.findtext(f"{_tt('Transport')}/{_tt('Protocol')}") or "").strip()
        if stream_type != "RTP-Unicast" or protocol not in UNICAST_PROTOCOLS:
            raise sender_fault(
                "InvalidArgVal",
                "InvalidStreamSetup",
                reason=f"stream {stream_type or '?'} over {protocol or '?'} is not offered: "
                "use RTP-Unicast over RTSP (the relay streams RTSP over TCP: no multicast, no HTTP tunnelling)",
            )
        profile = self._profile(required_text(ctx.body, ns.TRT, "ProfileToken"))
        uri = self._model.stream_uri(profile, ctx.host)
        return TRT.GetStreamUriResponse(media_uri_element(_trt("MediaUri"), uri))

    def get_snapshot_uri(self, ctx: RequestContext) -> _Element:
        """GetSnapshotUri: the relay's ``/snapshot/<camera id>.jpg`` on this host and port."""
        profile = self._profile(required_text(ctx.body, ns.TRT, "ProfileToken"))
        uri = self._model.snapshot_uri(profile, ctx.host)
        return TRT.GetSnapshotUriResponse(media_uri_element(_trt("MediaUri"), uri))

    # --- helpers --------------------------------------------------------------------------------

    def _compatible(self, ctx: RequestContext, response: str, kind: str) -> _Element:
        profile = self._profile(required_text(ctx.body, ns.TRT, "ProfileToken"))
        configs = self._media1_configs(kind, self._model.compatible(kind, profile))
        return self._configuration_list(response, kind, configs)

    def _option_targets(self, ctx: RequestContext, kind: str) -> list[Any]:
        """The configurations an Options request is about: the named one, a profile's compatible ones, or all."""
        token = optional_text(ctx.body, ns.TRT, "ConfigurationToken")
        profile_token = optional_text(ctx.body, ns.TRT, "ProfileToken")
        if token:
            return [self._config(kind, token)]
        if profile_token:
            return self._media1_configs(kind, self._model.compatible(kind, self._profile(profile_token)))
        return self._media1_configs(kind)


_ADD_REMOVE = (
    (VIDEO_SOURCE, "VideoSource"),
    (VIDEO_ENCODER, "VideoEncoder"),
    (AUDIO_SOURCE, "AudioSource"),
    (AUDIO_ENCODER, "AudioEncoder"),
    (PTZ, "PTZ"),
)


def _element(tag: str, kind: str, config: Any, use_count: int) -> _Element:
    if kind == VIDEO_SOURCE:
        return video_source_configuration_element(tag, config, use_count)
    if kind == AUDIO_SOURCE:
        return audio_source_configuration_element(tag, config, use_count)
    if kind == VIDEO_ENCODER:
        return _video_encoder_element(tag, config, use_count)
    return _audio_encoder_element(tag, config, use_count)


def _video_encoder_element(tag: str, config: VideoEncoderConfiguration, use_count: int) -> _Element:
    """A ver10 ``tt:VideoEncoderConfiguration``: the stream as configured, RateControl always present."""
    stream = config.stream
    return TT(
        tag,
        {"token": config.token},
        TT.Name(config.name),
        TT.UseCount(str(use_count)),
        TT.Encoding(config.encoding),
        TT.Resolution(TT.Width(str(stream.width)), TT.Height(str(stream.height))),
        TT.Quality(f"{QUALITY:g}"),
        TT.RateControl(
            TT.FrameRateLimit(str(stream.fps)), TT.EncodingInterval("1"), TT.BitrateLimit(str(stream.bitrate))
        ),
        no_multicast(),
        TT.SessionTimeout(SESSION_TIMEOUT),
    )


def _audio_encoder_element(tag: str, config: AudioEncoderConfiguration, use_count: int) -> _Element:
    """A ver10 ``tt:AudioEncoderConfiguration`` (sample rate in kHz, as ONVIF counts it)."""
    codec = config.codec
    assert codec.media1 is not None
    return TT(
        tag,
        {"token": config.token},
        TT.Name(config.name),
        TT.UseCount(str(use_count)),
        TT.Encoding(codec.media1),
        TT.Bitrate(str(codec.bitrate)),
        TT.SampleRate(str(codec.sample_rate_khz)),
        no_multicast(),
        TT.SessionTimeout(SESSION_TIMEOUT),
    )


def _encoder_options(configs: Sequence[VideoEncoderConfiguration]) -> _Element:
    """``trt:Options``: the resolutions, frame rates and bitrates of ``configs``, nothing else."""
    quality = int(QUALITY)
    parts: list[_Element] = [int_range(_tt("QualityRange"), quality, quality)]
    if configs:
        resolutions = sorted({(c.stream.width, c.stream.height) for c in configs}, reverse=True)
        fps = [c.stream.fps for c in configs]
        bitrates = [c.stream.bitrate for c in configs]

        def h264(tag: str, *extra: _Element) -> _Element:
            return TT(
                tag,
                *(TT.ResolutionsAvailable(TT.Width(str(w)), TT.Height(str(h))) for w, h in resolutions),
                int_range(_tt("GovLengthRange"), *GOV_LENGTH_RANGE),
                int_range(_tt("FrameRateRange"), min(fps), max(fps)),
                int_range(_tt("EncodingIntervalRange"), 1, 1),
                *(TT.H264ProfilesSupported(name) for name in H264_PROFILES),
                *extra,
            )

        parts.append(h264(_tt("H264")))
        parts.append(TT.Extension(h264(_tt("H264"), int_range(_tt("BitrateRange"), min(bitrates), max(bitrates)))))
    return TRT.Options({"GuaranteedFrameRateSupported": "false"}, *parts)
