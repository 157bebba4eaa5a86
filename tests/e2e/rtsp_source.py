"""A stand-in ATOM Cam RTSP server for the end-to-end pipeline tests.

Run it with the system python (it needs PyGObject and gst-rtsp-server, which the
project venv cannot import)::

    /usr/bin/python3 tests/e2e/rtsp_source.py --port 0 --audio aac \
        --username admin --password 'p@ss:/%$'

It serves live test patterns on 127.0.0.1 at the camera's paths:

    /video0_unicast   H.264 main profile (SDP without sprop-parameter-sets, like the camera)
    /video1_unicast   H.265 Main
    /video2_unicast   H.265 Main

each with one audio track as the camera sends it: AAC (mpeg4-generic), L16 (S16_BE) or
OPUS, 8 kHz mono, or no audio. With --username/--password every path requires RTSP
Digest auth (as the camera) or, with --auth basic, Basic auth. When listening it
prints ``READY rtsp://127.0.0.1:<port>`` on stdout (``--port 0`` picks a free port);
SIGTERM or SIGINT stop it with status 0.
"""

from __future__ import annotations

import argparse
import signal
import sys
import warnings
from typing import Any

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

PATHS = {
    "video0_unicast": "h264",
    "video1_unicast": "h265",
    "video2_unicast": "h265",
}

VIDEO = {
    "h264": (
        "x264enc tune=zerolatency speed-preset=superfast bframes=0 key-int-max={gop} bitrate=300 "
        "! video/x-h264,profile=main ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=-1"
    ),
    "h265": (
        "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate=300 "
        "! h265parse ! rtph265pay name=pay0 pt=96 config-interval=-1"
    ),
}

AUDIO = {
    "aac": (
        "audio/x-raw,rate=8000,channels=1 ! avenc_aac bitrate=32000 ! aacparse "
        "! rtpmp4gpay name=pay1 pt=97"
    ),
    "l16": "audio/x-raw,format=S16BE,rate=8000,channels=1 ! rtpL16pay name=pay1 pt=97",
    "opus": "audio/x-raw,rate=8000,channels=1 ! opusenc bitrate=16000 ! rtpopuspay name=pay1 pt=97",
}

ROLE = "camera-user"


def launch_line(codec: str, audio: str, width: int, height: int, fps: int) -> str:
    """The gst-launch description of one camera stream (video pay0, audio pay1)."""
    video = (
        f"videotestsrc is-live=true pattern=ball "
        f"! videoconvert ! video/x-raw,format=I420,width={width},height={height},framerate={fps}/1 "
        f"! {VIDEO[codec].format(gop=fps)}"
    )
    if audio == "none":
        return f"( {video} )"
    sound = f"audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! {AUDIO[audio]}"
    return f"( {video} {sound} )"


def strip_sprop(sdp: str) -> str:
    """Remove sprop-parameter-sets from H.264 fmtp lines, as the ATOM Cam main stream lacks them."""
    lines = []
    for line in sdp.split("\r\n"):
        if line.startswith("a=fmtp:") and "sprop-parameter-sets=" in line:
            head, _, params = line.partition(" ")
            kept = [p for p in params.split(";") if not p.strip().startswith("sprop-parameter-sets=")]
            line = head + " " + ";".join(p.strip() for p in kept if p.strip())
        lines.append(line)
    return "\r\n".join(lines)


def on_send_message(_client: Any, _ctx: Any, message: Any) -> None:
    """Rewrite the SDP body of DESCRIBE replies (Content-Length is recomputed on send)."""
    ok, value = message.get_header(GstRtsp.RTSPHeaderField.CONTENT_TYPE, 0)
    if ok != GstRtsp.RTSPResult.OK or value != "application/sdp":
        return
    ok, body = message.get_body()
    if ok != GstRtsp.RTSPResult.OK or not body:
        return
    text = bytes(body).rstrip(b"\0").decode("utf-8")
    message.set_body(strip_sprop(text).encode("utf-8"))


def on_client_connected(_server: Any, client: Any) -> None:
    """Hook each new RTSP client so its DESCRIBE replies look like the camera's."""
    client.connect("send-message", on_send_message)


# PyGObject marshals the boxed GstRTSPContext argument of "send-message" as a GObject
# (the GIR is out of date) and GLib reports that as a warning; the message itself is
# marshalled correctly, and the context is not used.
warnings.filterwarnings("ignore", message=r"g_value_get_object: assertion")


def build_auth(username: str, password: str, method: str) -> Any:
    """An RTSPAuth accepting exactly this user, by Digest (as the camera) or Basic.

    Only one method at a time: GstRTSPAuthMethod is a bit set in C, but PyGObject
    rejects the combined value, so "both" cannot be expressed from Python.
    """
    auth = GstRtspServer.RTSPAuth()
    auth.set_realm("atomcam")
    token = GstRtspServer.RTSPToken()
    token.set_string("media.factory.role", ROLE)
    if method == "digest":
        auth.add_digest(username, password, token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.DIGEST)
    else:
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(username, password), token)
        auth.set_supported_methods(GstRtsp.RTSPAuthMethod.BASIC)
    return auth


def main(argv: list[str]) -> int:
    """Parse options, serve until SIGTERM/SIGINT, return the exit status."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bind", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed on the READY line)")
    parser.add_argument("--audio", choices=("aac", "l16", "opus", "none"), default="aac")
    parser.add_argument("--username")
    parser.add_argument("--password")
    parser.add_argument("--auth", choices=("digest", "basic"), default="digest")
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=180)
    parser.add_argument("--fps", type=int, default=20)
    options = parser.parse_args(argv)
    if (options.username is None) != (options.password is None):
        parser.error("--username and --password go together")
    if options.username is not None and ":" in options.username:
        parser.error("--username must not contain ':' (Basic and Digest both split on it)")

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(options.bind)
    server.set_service(str(options.port))
    server.connect("client-connected", on_client_connected)
    if options.username is not None:
        server.set_auth(build_auth(options.username, options.password, options.auth))
    mounts = server.get_mount_points()
    for path, codec in PATHS.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch_line(codec, options.audio, options.width, options.height, options.fps))
        factory.set_shared(True)
        if options.username is not None:
            permissions = GstRtspServer.RTSPPermissions()
            permissions.add_permission_for_role(ROLE, "media.factory.access", True)
            permissions.add_permission_for_role(ROLE, "media.factory.construct", True)
            factory.set_permissions(permissions)
        mounts.add_factory("/" + path, factory)

    loop = GLib.MainLoop()
    source_id = server.attach(None)
    if source_id == 0:
        print(f"cannot listen on {options.bind}:{options.port}", file=sys.stderr, flush=True)
        return 1
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_HIGH, signum, loop.quit)
    print(f"READY rtsp://{options.bind}:{server.get_bound_port()}", flush=True)
    loop.run()
    # Drop the clients and let their teardown run before the interpreter exits:
    # exiting right after serving a client crashed (SIGSEGV) about one run in fifteen.
    GLib.source_remove(source_id)
    server.client_filter(lambda _server, _client: GstRtspServer.RTSPFilterResult.REMOVE)
    context = loop.get_context()
    while context.iteration(False):
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
