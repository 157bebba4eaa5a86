"""XML shared by the ONVIF services, events and WS-Discovery: namespaces, hardened parsing, SOAP envelopes, XML Schema types."""
