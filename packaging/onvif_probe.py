"""Ask an ONVIF device on 127.0.0.1 for GetSystemDateAndTime and GetProfiles with a real client.

``packaging/arm64-check.sh`` runs it (from .venv, which has onvif-zeep-async) against the
demo started from the installed .deb inside the emulated root:

    .venv/bin/python packaging/onvif_probe.py PORT [USER PASSWORD] [DEADLINE_SECONDS]

It waits up to the deadline for the device to answer, then prints the seconds to serve,
each call's round trip and the profile tokens; it exits non-zero on any failure.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

import onvif
from onvif import ONVIFCamera


async def probe(port: int, user: str, password: str, deadline: float) -> int:
    """Print what the device at 127.0.0.1:``port`` answers; 0 when both calls succeed."""
    started = time.monotonic()
    camera = ONVIFCamera("127.0.0.1", port, user, password, os.path.join(os.path.dirname(onvif.__file__), "wsdl"),
                         no_cache=True)
    while True:
        try:
            await camera.update_xaddrs()
            break
        except Exception as exc:  # noqa: BLE001 - not serving yet
            if time.monotonic() - started > deadline:
                print(f"no ONVIF answer on 127.0.0.1:{port} within {deadline:.0f} s: {exc}")
                return 1
            await asyncio.sleep(0.25)
    print(f"serving after {time.monotonic() - started:.2f} s of probing")
    try:
        devicemgmt = await camera.create_devicemgmt_service()
        begin = time.monotonic()
        clock = await devicemgmt.GetSystemDateAndTime()
        print(f"GetSystemDateAndTime: {time.monotonic() - begin:.3f} s, UTC {clock.UTCDateTime.Date.Year}-"
              f"{clock.UTCDateTime.Date.Month:02}-{clock.UTCDateTime.Date.Day:02}")
        media = await camera.create_media_service()
        begin = time.monotonic()
        profiles = await media.GetProfiles()
        print(f"GetProfiles: {time.monotonic() - begin:.3f} s, tokens {[p.token for p in profiles]}")
        return 0 if profiles else 1
    finally:
        await camera.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    sys.exit(asyncio.run(probe(int(args[0]), *(args[1:3] or ["admin", "admin"]),
                               float(args[3]) if len(args) > 3 else 120.0)))
