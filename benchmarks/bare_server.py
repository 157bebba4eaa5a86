"""The ceiling: a bare twisted.web server answering every POST with one fixed body.

It does what any Twisted HTTP server must do (accept, parse HTTP, read the request body,
write headers and a body) and nothing else, so the relay's SOAP throughput is quoted
as a fraction of this server's on the same machine, with the same requests.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

reactor: Any = _reactor
CONTENT_TYPE = b"application/soap+xml; charset=utf-8"


class FixedBody(Resource):
    """Every POST gets ``body`` with the SOAP content type."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()
        self.body = body

    def render_POST(self, request: Request) -> bytes:
        """The fixed answer."""
        request.setHeader(b"content-type", CONTENT_TYPE)
        return self.body


def main() -> None:
    """Serve on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    args = parser.parse_args()
    site = Site(FixedBody(args.body.read_bytes()))
    site.log = lambda request: None
    reactor.listenTCP(args.port, site, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
