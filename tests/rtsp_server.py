"""Serve a video clip over RTSP on loopback, for the RTSP source tests.

Run with Debian's Python, which has the GStreamer bindings (a virtualenv does not):

    /usr/bin/python3 tests/rtsp_server.py --clip CLIP --port P [--path /stream] [--loop]

The clip is decoded and re-encoded to H.264 (zero-latency x264) and served at
rtsp://127.0.0.1:P/stream. Each client gets its own pipeline (media not shared), so every
connection starts at the beginning of the clip. With --loop the clip restarts when it ends
(seamless segment seeks), otherwise the stream ends after the clip.

Prints ``READY`` on stdout once the server listens, then runs until killed. Exits with 2 and a
one-line message when the bindings are missing or the port cannot be bound.
"""
from __future__ import annotations

import argparse
import os
import signal
import sys

# The launch string of DESIGN.md, plus a short keyframe interval and SPS/PPS with every keyframe:
# a client that opens with fflags=nobuffer discards what it read while probing the stream
# (including the first keyframe), so it can only start decoding at the next one. x264enc's
# default interval (250 frames) is longer than a test clip.
LAUNCH = ("( filesrc location={clip} ! decodebin ! videoconvert ! x264enc tune=zerolatency "
          "speed-preset=ultrafast key-int-max={gop} ! rtph264pay name=pay0 pt=96 config-interval=-1 )")


def _quote(path: str) -> str:
    # gst_parse_launch reads a double-quoted property value verbatim (spaces included)
    return '"' + path.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _loop_media(media, Gst, GLib) -> None:
    """Make one client's pipeline replay the clip forever.

    A segment seek (flag SEGMENT) makes the pipeline post SEGMENT_DONE instead of EOS at the end,
    and a further non-flushing segment seek back to 0 continues with running time intact, so the
    RTP timestamps keep increasing. RTSPMedia owns the bus watch, so we listen to the bus's
    synchronous messages and seek from the main loop, not from the streaming thread.
    """
    state = {"pipeline": None}

    def seek(flags) -> bool:
        pipeline = state["pipeline"]
        if pipeline is not None:
            pipeline.seek(1.0, Gst.Format.TIME, flags, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
        return False  # one-shot idle callback

    def on_sync_message(bus, message) -> None:
        if message.type == Gst.MessageType.ASYNC_DONE and not state.get("started"):
            state["started"] = True
            GLib.idle_add(seek, Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT)
        elif message.type == Gst.MessageType.SEGMENT_DONE:
            GLib.idle_add(seek, Gst.SeekFlags.SEGMENT)

    def on_prepared(media) -> None:
        element = media.get_element()
        pipeline = element.get_parent()
        while pipeline is not None and pipeline.get_parent() is not None:
            pipeline = pipeline.get_parent()
        state["pipeline"] = pipeline
        bus = pipeline.get_bus()
        bus.enable_sync_message_emission()
        bus.connect("sync-message", on_sync_message)

    media.connect("prepared", on_prepared)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--clip", required=True, help="video file to serve")
    parser.add_argument("--port", type=int, required=True, help="TCP port to listen on (127.0.0.1)")
    parser.add_argument("--path", default="/stream", help="mount point (default /stream)")
    parser.add_argument("--loop", action="store_true", help="replay the clip forever")
    parser.add_argument("--gop", type=int, default=10, help="keyframe interval in frames (default 10)")
    args = parser.parse_args(argv)

    if not os.path.isfile(args.clip):
        print(f"rtsp_server: {args.clip}: file not found", file=sys.stderr)
        return 2
    try:
        import gi
        gi.require_version("Gst", "1.0")
        gi.require_version("GstRtspServer", "1.0")
        from gi.repository import GLib, Gst, GstRtspServer
    except (ImportError, ValueError) as e:
        print(f"rtsp_server: GStreamer RTSP server bindings missing ({e}); "
              "run scripts/install-test-deps.sh", file=sys.stderr)
        return 2

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(LAUNCH.format(clip=_quote(os.path.abspath(args.clip)), gop=args.gop))
    factory.set_shared(False)
    if args.loop:
        factory.connect("media-configure", lambda _factory, media: _loop_media(media, Gst, GLib))
    path = args.path if args.path.startswith("/") else "/" + args.path
    server.get_mount_points().add_factory(path, factory)
    if server.attach(None) == 0:
        print(f"rtsp_server: cannot listen on 127.0.0.1:{args.port}", file=sys.stderr)
        return 2

    loop = GLib.MainLoop()
    # SIGTERM/SIGINT end the main loop cleanly; SIGKILL (the reconnect test) of course does not
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, lambda: (loop.quit(), False)[1])
    print("READY", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
