"""The ONVIF Media2 service (ver20, ``tr2``) at ``/onvif/media2_service``.

The same profiles and configurations as Media (ver10), over the device's shared
``MediaModel``, but complete: Media2 names encodings by their IANA media subtype, so
H.265 streams and Opus/L16 audio appear here. Every operation's access class is the one
its ``role="access"`` paragraph in the Media2 spec gives. Responses follow the element
order of ``ver20/media/wsdl/media.wsdl`` and ``onvif.xsd``.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Sequence

from lxml.etree import _Element
from twisted.logger import Logger

from atomrelay.auth.policy import AccessClass
from atomrelay.onvif.base import Handler, Operation, RequestContext
from atomrelay.onvif.media_common import (
    MediaServiceBase,
    audio_source_configuration_element,
    check_video_encoder_settings,
    optional_text,
    parse_int,
    read_video_encoder_settings,
    required_text,
    video_source_configuration_element,
    video_source_configuration_options_element,
)
from atomrelay.onvif.media_types import (
    AUDIO_ENCODER,
    AUDIO_SOURCE,
    KINDS,
    PTZ,
    QUALITY,
    TT,
    VIDEO_ENCODER,
    VIDEO_SOURCE,
    AudioEncoderConfiguration,
    Profile,
    VideoEncoderConfiguration,
    VideoSourceConfiguration,
    no_config,
)
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, sender_fault
from atomrelay.xml.xstypes import xs_bool

PATH = "/onvif/media2_service"
VERSION = (26, 6)
"""The release of ``ver20/media/wsdl/media.wsdl`` this service follows (26.06)."""
UNICAST_PROTOCOLS = frozenset({"RtspUnicast", "RTSP"})
"""GetStreamUri protocols answered with the mediamtx RTSP URI: RTSP's SETUP picks the transport, and mediamtx offers
TCP, which clients asking for UDP fall back to. RtspOverHttp is refused: Media2 says its URI must use the web
service's port, and no stream passes through the relay."""
ALL = "All"

TR2 = Maker(ns.TR2, {"tr2": ns.TR2, "tt": ns.TT})

# The ConfigurationSet children the relay can fill, in schema order.
_SET_ORDER = (VIDEO_SOURCE, AUDIO_SOURCE, VIDEO_ENCODER, AUDIO_ENCODER, PTZ)


def _tt(local: str) -> str:
    return ns.q(ns.TT, local)


def _tr2(local: str) -> str:
    return ns.q(ns.TR2, local)


class Media2Service(MediaServiceBase):
    """The Media2 (ver20) service of one ONVIF device, over the device's ``MediaModel``."""

    log = Logger()
    NAMESPACE = ns.TR2
    PATH = PATH
    VERSION = VERSION
    MAKER = TR2

    def _operations(self) -> dict[str, Operation]:
        read, actuate = AccessClass.READ_MEDIA, AccessClass.ACTUATE
        table: dict[str, tuple[Handler, AccessClass]] = {
            "GetServiceCapabilities": (self.get_service_capabilities, AccessClass.PRE_AUTH),
            "GetProfiles": (self.get_profiles, read),
            "CreateProfile": (self.create_profile, actuate),
            "DeleteProfile": (self.delete_profile, actuate),
            "AddConfiguration": (self.add_configuration, actuate),
            "RemoveConfiguration": (self.remove_configuration, actuate),
            "GetVideoSourceConfigurations": (self._lister(VIDEO_SOURCE), read),
            "GetVideoEncoderConfigurations": (self._lister(VIDEO_ENCODER), read),
            "GetAudioSourceConfigurations": (self._lister(AUDIO_SOURCE), read),
            "GetAudioEncoderConfigurations": (self._lister(AUDIO_ENCODER), read),
            "GetMetadataConfigurations": (self._empty("GetMetadataConfigurationsResponse"), read),
            "GetAnalyticsConfigurations": (self._empty("GetAnalyticsConfigurationsResponse"), read),
            "GetAudioOutputConfigurations": (self._empty("GetAudioOutputConfigurationsResponse"), read),
            "GetAudioDecoderConfigurations": (self._empty("GetAudioDecoderConfigurationsResponse"), read),
            "GetVideoSourceConfigurationOptions": (self.get_video_source_configuration_options, read),
            "GetVideoEncoderConfigurationOptions": (self.get_video_encoder_configuration_options, read),
            "GetAudioEncoderConfigurationOptions": (self.get_audio_encoder_configuration_options, read),
            "SetVideoEncoderConfiguration": (self.set_video_encoder_configuration, actuate),
            "GetVideoEncoderInstances": (self.get_video_encoder_instances, read),
            "GetOSDs": (self._empty("GetOSDsResponse"), read),
            "GetStreamUri": (self.get_stream_uri, read),
            "GetSnapshotUri": (self.get_snapshot_uri, read),
        }
        operations = {name: Operation(handler, access) for name, (handler, access) in table.items()}
        operations["GetProfiles"] = Operation(
            self.get_profiles, read, reply_key=lambda ctx: self._cache.reply_key(self._profiles_key(ctx))
        )
        return operations

    # --- elements --------------------------------------------------------------------------

    def _profile_element(self, profile: Profile, kinds: Sequence[str], counts: Counter[str]) -> _Element:
        parts: list[_Element] = []
        for kind in _SET_ORDER:
            token = profile.slot(kind)
            if kind not in kinds or token is None:
                continue
            if kind == PTZ:
                ptz = self._model.ptz_element(profile, _tr2("PTZ"), counts[token])
                if ptz is not None:
                    parts.append(ptz)
                continue
            config = self._model.configuration(kind, token)
            parts.append(_element(_tr2(kind), kind, config, counts[config.token]))
        configurations = [TR2.Configurations(*parts)] if parts else []
        return TR2.Profiles(
            {"token": profile.token, "fixed": xs_bool(profile.fixed)}, TR2.Name(profile.name), *configurations
        )

    def _capabilities(self) -> _Element:
        supported = [VIDEO_SOURCE, VIDEO_ENCODER]
        if self._model.configurations(AUDIO_SOURCE):
            supported += [AUDIO_SOURCE, AUDIO_ENCODER]
        if self._model.configurations(PTZ):
            supported.append(PTZ)
        return TR2.Capabilities(
            {
                "SnapshotUri": "true",
                "Rotation": "false",
                "VideoSourceMode": "false",
                "OSD": "false",
                "TemporaryOSDText": "false",
                "Mask": "false",
                "SourceMask": "false",
            },
            TR2.ProfileCapabilities(
                {
                    "MaximumNumberOfProfiles": str(self._model.max_profiles),
                    "ConfigurationsSupported": " ".join(supported),
                }
            ),
            TR2.StreamingCapabilities(
                {
                    "RTSPStreaming": "true",
                    "RTPMulticast": "false",
                    "RTP_RTSP_TCP": "true",
                    "NonAggregateControl": "false",
                    "AutoStartMulticast": "false",
                    "SecureRTSPStreaming": "false",
                }
            ),
        )

    # --- capabilities and profiles ------------------------------------------------------

    def get_service_capabilities(self, ctx: RequestContext) -> _Element:
        """GetServiceCapabilities: snapshots, RTSP over TCP, the profile limit, the configuration kinds."""
        return TR2.GetServiceCapabilitiesResponse(self._cache.get(("capabilities",), self._capabilities))

    def get_profiles(self, ctx: RequestContext) -> _Element:
        """GetProfiles: all profiles or one (Token), with the configurations the Type list asks for."""
        key = self._profiles_key(ctx)
        _, token, kinds = key
        profiles = [self._model.profile(token)] if token is not None else self._model.profiles()

        def build() -> _Element:
            counts = self._model.use_counts()
            return TR2.GetProfilesResponse(*(self._profile_element(p, kinds, counts) for p in profiles))

        return self._cache.get(key, build)

    @staticmethod
    def _profiles_key(ctx: RequestContext) -> tuple[str, str | None, tuple[str, ...]]:
        """What a GetProfiles answer depends on besides the model: its Token and its Type list."""
        token = optional_text(ctx.body, ns.TR2, "Token") or None
        requested = [(t.text or "").strip() for t in ctx.body.findall(_tr2("Type"))]
        kinds = KINDS if ALL in requested else tuple(k for k in KINDS if k in requested)
        return ("GetProfiles", token, kinds)

    async def create_profile(self, ctx: RequestContext) -> _Element:
        """CreateProfile: a non-fixed profile, optionally with configurations; answers its token."""
        name = required_text(ctx.body, ns.TR2, "Name")
        profile = await self._model.create_profile(name, configurations=_references(ctx.body, need_token=True))
        return TR2.CreateProfileResponse(TR2.Token(profile.token))

    async def delete_profile(self, ctx: RequestContext) -> _Element:
        """DeleteProfile: user-made profiles only (``ter:DeletionOfFixedProfile``)."""
        await self._model.delete_profile(required_text(ctx.body, ns.TR2, "Token"))
        return TR2.DeleteProfileResponse()

    async def add_configuration(self, ctx: RequestContext) -> _Element:
        """AddConfiguration: put configurations into a profile and optionally rename it, all or nothing."""
        token = required_text(ctx.body, ns.TR2, "ProfileToken")
        name = optional_text(ctx.body, ns.TR2, "Name")
        await self._model.change_profile(token, add=_references(ctx.body, need_token=True), name=name)
        return TR2.AddConfigurationResponse()

    async def remove_configuration(self, ctx: RequestContext) -> _Element:
        """RemoveConfiguration: take kinds out of a profile (tokens are ignored; All empties it)."""
        token = required_text(ctx.body, ns.TR2, "ProfileToken")
        kinds = [kind for kind, _ in _references(ctx.body, need_token=False)]
        if ALL in kinds:
            kinds = list(KINDS)
        await self._model.change_profile(token, remove=[kind for kind in kinds if kind in KINDS])
        return TR2.RemoveConfigurationResponse()

    # --- configurations -------------------------------------------------------------------

    def _lister(self, kind: str) -> Callable[[RequestContext], _Element]:
        response = f"Get{kind}ConfigurationsResponse"

        def get(ctx: RequestContext) -> _Element:
            configs = self._targets(ctx, kind)
            counts = self._model.use_counts()
            return TR2(response, *(_element(_tr2("Configurations"), kind, c, counts[c.token]) for c in configs))

        get.__doc__ = f"Get{kind}Configurations: one by ConfigurationToken, a profile's compatible ones, or all."
        return get

    def get_video_source_configuration_options(self, ctx: RequestContext) -> _Element:
        """GetVideoSourceConfigurationOptions: only the whole picture of the camera(s)."""
        configs: list[VideoSourceConfiguration] = self._targets(ctx, VIDEO_SOURCE)
        if not configs:
            configs = self._model.configurations(VIDEO_SOURCE)
        return TR2.GetVideoSourceConfigurationOptionsResponse(
            video_source_configuration_options_element(_tr2("Options"), configs, self._model.max_profiles)
        )

    def get_video_encoder_configuration_options(self, ctx: RequestContext) -> _Element:
        """GetVideoEncoderConfigurationOptions: per encoding, exactly what the streams are (no re-encoding)."""
        configs: list[VideoEncoderConfiguration] = self._targets(ctx, VIDEO_ENCODER)
        if not configs:
            raise sender_fault(
                "InvalidArgVal", "IncompatibleConfiguration", reason="no video encoder configuration fits the profile"
            )
        key = ("GetVideoEncoderConfigurationOptions", tuple(c.token for c in configs))
        return self._cache.get(key, lambda: TR2.GetVideoEncoderConfigurationOptionsResponse(*_encoder_options(configs)))

    def get_audio_encoder_configuration_options(self, ctx: RequestContext) -> _Element:
        """GetAudioEncoderConfigurationOptions: per encoding, the bitrates and sample rates the streams have."""
        configs: list[AudioEncoderConfiguration] = self._targets(ctx, AUDIO_ENCODER)
        if not configs:
            raise sender_fault(
                "InvalidArgVal", "IncompatibleConfiguration", reason="no audio encoder configuration fits the profile"
            )
        by_encoding: dict[str, tuple[set[int], set[int]]] = {}
        for config in configs:
            bitrates, rates = by_encoding.setdefault(config.codec.media2, (set(), set()))
            bitrates.add(config.codec.bitrate)
            rates.add(config.codec.sample_rate_khz)
        return TR2.GetAudioEncoderConfigurationOptionsResponse(
            *(
                TR2.Options(
                    TT.Encoding(encoding),
                    TT.BitrateList(*(TT.Items(str(b)) for b in sorted(bitrates))),
                    TT.SampleRateList(*(TT.Items(str(r)) for r in sorted(rates))),
                )
                for encoding, (bitrates, rates) in by_encoding.items()
            )
        )

    def set_video_encoder_configuration(self, ctx: RequestContext) -> _Element:
        """SetVideoEncoderConfiguration: accept the current values, ``ter:ConfigModify`` for anything else."""
        element = ctx.body.find(_tr2("Configuration"))
        if element is None:
            raise sender_fault("InvalidArgs", reason="SetVideoEncoderConfiguration needs Configuration")
        token = (element.get("token") or "").strip()
        config = self._model.configuration(VIDEO_ENCODER, token)
        if config is None:
            raise no_config(token, VIDEO_ENCODER)
        wanted = read_video_encoder_settings(
            element, encoding_interval=None, gov_length=parse_int(element.get("GovLength"), "GovLength")
        )
        check_video_encoder_settings(config, wanted)
        return TR2.SetVideoEncoderConfigurationResponse()

    def get_video_encoder_instances(self, ctx: RequestContext) -> _Element:
        """GetVideoEncoderInstances: the camera's streams per encoding (mediamtx serves any number of readers)."""
        source = self._model.video_source_configuration(required_text(ctx.body, ns.TR2, "ConfigurationToken"))
        streams = [c for c in self._model.configurations(VIDEO_ENCODER) if c.camera.id == source.camera.id]
        per_encoding = Counter(c.encoding for c in streams)
        return TR2.GetVideoEncoderInstancesResponse(
            TR2.Info(
                *(TR2.Codec(TR2.Encoding(encoding), TR2.Number(str(n))) for encoding, n in per_encoding.items()),
                TR2.Total(str(len(streams))),
            )
        )

    # --- URIs -------------------------------------------------------------------------------

    def get_stream_uri(self, ctx: RequestContext) -> _Element:
        """GetStreamUri: the mediamtx RTSP URI for RtspUnicast and RTSP; others (RtspOverHttp too) are refused."""
        protocol = required_text(ctx.body, ns.TR2, "Protocol")
        if protocol not in UNICAST_PROTOCOLS:
            raise sender_fault(
                "InvalidArgVal",
                "InvalidStreamSetup",
                reason=f"protocol {protocol[:40]!r} is not offered: use RTSP (the relay streams RTSP over TCP, "
                "with no HTTP tunnelling)",
            )
        profile = self._model.profile(required_text(ctx.body, ns.TR2, "ProfileToken"))
        return TR2.GetStreamUriResponse(TR2.Uri(self._model.stream_uri(profile, ctx.host)))

    def get_snapshot_uri(self, ctx: RequestContext) -> _Element:
        """GetSnapshotUri: the relay's ``/snapshot/<camera id>.jpg`` on this host and port."""
        profile = self._model.profile(required_text(ctx.body, ns.TR2, "ProfileToken"))
        return TR2.GetSnapshotUriResponse(TR2.Uri(self._model.snapshot_uri(profile, ctx.host)))

    # --- helpers --------------------------------------------------------------------------------

    def _targets(self, ctx: RequestContext, kind: str) -> list[Any]:
        """Per Get<entity>Configurations: the named configuration, a profile's compatible ones, or all."""
        token = optional_text(ctx.body, ns.TR2, "ConfigurationToken") or None
        profile_token = optional_text(ctx.body, ns.TR2, "ProfileToken") or None
        profile = self._model.profile(profile_token) if profile_token is not None else None
        if token is not None:
            config = self._model.configuration(kind, token)
            if config is None:
                raise no_config(token, kind)
            if profile is not None and config not in self._model.compatible(kind, profile):
                raise sender_fault(
                    "InvalidArgVal",
                    "IncompatibleConfiguration",
                    reason=f"{kind} configuration {token!r} does not fit profile {profile.token!r}",
                )
            return [config]
        if profile is not None:
            return self._model.compatible(kind, profile)
        return self._model.configurations(kind)


def _references(body: _Element, need_token: bool) -> list[tuple[str, str]]:
    """The ``tr2:Configuration`` references of a request as (Type, Token); Type All is skipped when adding."""
    references = []
    for element in body.findall(_tr2("Configuration")):
        kind = (element.findtext(_tr2("Type")) or "").strip()
        token = (element.findtext(_tr2("Token")) or "").strip()
        if need_token:
            if kind == ALL:
                continue
            if not token:
                raise no_config("", kind)
        references.append((kind, token))
    return references


def _element(tag: str, kind: str, config: Any, use_count: int) -> _Element:
    if kind == VIDEO_SOURCE:
        return video_source_configuration_element(tag, config, use_count)
    if kind == AUDIO_SOURCE:
        return audio_source_configuration_element(tag, config, use_count)
    if kind == VIDEO_ENCODER:
        return _video_encoder_element(tag, config, use_count)
    return _audio_encoder_element(tag, config, use_count)


def _video_encoder_element(tag: str, config: VideoEncoderConfiguration, use_count: int) -> _Element:
    """A ``tt:VideoEncoder2Configuration``: the stream as configured, RateControl always present."""
    stream = config.stream
    return TT(
        tag,
        {"token": config.token},
        TT.Name(config.name),
        TT.UseCount(str(use_count)),
        TT.Encoding(config.encoding),
        TT.Resolution(TT.Width(str(stream.width)), TT.Height(str(stream.height))),
        TT.RateControl(TT.FrameRateLimit(str(stream.fps)), TT.BitrateLimit(str(stream.bitrate))),
        TT.Quality(f"{QUALITY:g}"),
    )


def _audio_encoder_element(tag: str, config: AudioEncoderConfiguration, use_count: int) -> _Element:
    """A ``tt:AudioEncoder2Configuration`` with the IANA encoding name (sample rate in kHz)."""
    codec = config.codec
    return TT(
        tag,
        {"token": config.token},
        TT.Name(config.name),
        TT.UseCount(str(use_count)),
        TT.Encoding(codec.media2),
        TT.Bitrate(str(codec.bitrate)),
        TT.SampleRate(str(codec.sample_rate_khz)),
    )


def _encoder_options(configs: Sequence[VideoEncoderConfiguration]) -> list[_Element]:
    """One ``tr2:Options`` per encoding: the resolutions, frame rates and bitrates the streams have."""
    by_encoding: dict[str, list[VideoEncoderConfiguration]] = {}
    for config in configs:
        by_encoding.setdefault(config.encoding, []).append(config)
    options = []
    for encoding, group in by_encoding.items():
        resolutions = sorted({(c.stream.width, c.stream.height) for c in group}, reverse=True)
        bitrates = [c.stream.bitrate for c in group]
        rates = sorted({c.stream.fps for c in group})
        options.append(
            TR2.Options(
                {"FrameRatesSupported": " ".join(str(r) for r in rates), "ConstantBitRateSupported": "false"},
                TT.Encoding(encoding),
                TT.QualityRange(TT.Min(f"{QUALITY:g}"), TT.Max(f"{QUALITY:g}")),
                *(TT.ResolutionsAvailable(TT.Width(str(w)), TT.Height(str(h))) for w, h in resolutions),
                TT.BitrateRange(TT.Min(str(min(bitrates))), TT.Max(str(max(bitrates)))),
            )
        )
    return options
