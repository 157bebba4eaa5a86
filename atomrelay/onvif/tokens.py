"""ONVIF tokens derived from camera and stream ids.

Tokens are stable across restarts and config reorders because they come from the ids
the user chose, never from list positions. Ids are ``[a-z0-9_-]{1,30}``, so no token
here exceeds the 64 characters of a ``tt:ReferenceToken`` and no two (camera, stream)
pairs can produce the same token (``.`` cannot occur inside an id).
"""

from __future__ import annotations


def profile(camera_id: str, stream: str) -> str:
    """Media profile of one camera stream: ``<camera>.<stream>``."""
    return f"{camera_id}.{stream}"


def video_source(camera_id: str) -> str:
    """VideoSource (one per camera)."""
    return f"{camera_id}.vs"


def video_source_configuration(camera_id: str) -> str:
    """VideoSourceConfiguration (one per camera)."""
    return f"{camera_id}.vsc"


def video_encoder_configuration(camera_id: str, stream: str) -> str:
    """VideoEncoderConfiguration (one per camera stream)."""
    return f"{camera_id}.{stream}.ve"


def audio_source(camera_id: str) -> str:
    """AudioSource (one per camera that has a stream with audio)."""
    return f"{camera_id}.as"


def audio_source_configuration(camera_id: str) -> str:
    """AudioSourceConfiguration (one per camera with audio)."""
    return f"{camera_id}.asc"


def audio_encoder_configuration(camera_id: str, stream: str) -> str:
    """AudioEncoderConfiguration (one per camera stream that carries audio)."""
    return f"{camera_id}.{stream}.ae"


def ptz_node(camera_id: str) -> str:
    """PTZNode of a PTZ-capable camera."""
    return f"{camera_id}.ptz"


def ptz_configuration(camera_id: str) -> str:
    """PTZConfiguration of a PTZ-capable camera."""
    return f"{camera_id}.ptzc"


def split_camera(token: str) -> str:
    """The camera id a token belongs to (the part before the first dot)."""
    return token.split(".", 1)[0]
