"""The relay's own (non-ONVIF) HTTP pages: the dashboard, ``/status`` and ``/metrics``."""
