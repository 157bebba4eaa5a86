"""atomrelay: ATOM Cam cameras as ONVIF devices, with mediamtx doing the RTSP work."""

__version__ = "0.1.0"
