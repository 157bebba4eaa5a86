"""ONVIF SOAP server: envelope, security, faults and one module per service."""
