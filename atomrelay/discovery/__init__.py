"""WS-Discovery (2005/04, as ONVIF uses it): the responder, its service, messages and the host's interfaces."""
