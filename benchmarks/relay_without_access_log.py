"""``atomrelay`` with twisted.web's access log switched off: what the access log costs.

The relay's sites log every request (``Site(logFormatter=access_log_formatter)``); the
console observer then demotes those lines to debug and drops them unless ``-v``. This
wrapper runs the unchanged relay with ``HTTPFactory.log`` as a no-op, so that the SOAP
benchmark can show the throughput the relay would have without that work.
"""

from __future__ import annotations

import sys

from twisted.web.http import HTTPFactory

from atomrelay.cli import main


def _no_access_log(self: HTTPFactory, request: object) -> None:
    """Log nothing."""


if __name__ == "__main__":
    HTTPFactory.log = _no_access_log  # type: ignore[method-assign]
    sys.exit(main())
