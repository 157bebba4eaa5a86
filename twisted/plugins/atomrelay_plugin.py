"""twistd plugin shim: ``twistd -n atomrelay -c config.yaml``."""

from twisted.application.service import ServiceMaker

atomrelay = ServiceMaker(
    "atomrelay", "atomrelay.tap", "ONVIF relay for ATOM Cam cameras behind mediamtx", "atomrelay"
)
