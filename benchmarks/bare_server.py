"""The ceiling: a bare twisted.web server answering every POST with one fixed body.

It does what any Twisted HTTP server must do (accept, parse HTTP, read the request body,
write headers and a body) and nothing else: no access log, and no HTML form parsing of
POST bodies (a twisted.web default that costs as much as all the rest here). The
relay's SOAP throughput is quoted as a fraction of this server's on the same machine,
with the same requests.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, cast

from twisted.internet import reactor as _reactor
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

reactor: Any = _reactor
CONTENT_TYPE = b"application/soap+xml; charset=utf-8"


class BareRequest(Request):
    """twisted.web's request without form parsing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["parsePOSTFormSubmission"] = False
        super().__init__(*args, **kwargs)  # type: ignore[no-untyped-call]


class FixedBody(Resource):
    """Every POST gets ``body`` with the SOAP content type."""

    isLeaf = True

    def __init__(self, body: bytes) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.body = body

    def render_POST(self, request: Request) -> bytes:
        """The fixed answer."""
        request.setHeader(b"content-type", CONTENT_TYPE)  # type: ignore[no-untyped-call]
        return self.body


def main() -> None:
    """Serve on 127.0.0.1 until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--body", type=Path, required=True)
    parser.add_argument("--stock", action="store_true",
                        help="twisted.web's defaults instead: form parsing, and an access log line per request "
                             "(to twisted's log, which nobody reads here)")
    args = parser.parse_args()
    site: Any = cast(Any, Site)(FixedBody(args.body.read_bytes()))
    if not args.stock:
        site.requestFactory = BareRequest
        site.log = lambda request: None
    reactor.listenTCP(args.port, site, interface="127.0.0.1")
    reactor.run()


if __name__ == "__main__":
    main()
