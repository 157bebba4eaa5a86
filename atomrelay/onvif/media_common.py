"""What the Media (ver10) and Media2 (ver20) services share: encoder settings, the service base, elements, parsing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from lxml import etree
from lxml.etree import _Element

from atomrelay.onvif.base import Operation, RequestContext, Service
from atomrelay.onvif.media_model import MediaModel, ResponseCache
from atomrelay.onvif.media_types import (
    TT,
    AudioSource,
    AudioSourceConfiguration,
    VideoEncoderConfiguration,
    VideoSource,
    VideoSourceConfiguration,
)
from atomrelay.xml import ns
from atomrelay.xml.soap import Maker, sender_fault

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
