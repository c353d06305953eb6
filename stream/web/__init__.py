"""Live browser view of the pipeline's output: :class:`WebSink` (``posestream run --serve [HOST:]PORT``).

The sink runs an aiohttp server in a background thread of the output process, with its own
asyncio loop. ``write(frame)`` never waits on a viewer: it keeps the newest frame of each source
(a copy of the rendered image, its record and counters) and wakes the server thread; JPEG encoding
happens there, lazily, once per frame whatever the number of viewers; every viewer gets the newest
frame when it is ready for one, so a slow viewer skips frames (counted) and never delays others.

Endpoints (all GET; every one but ``/healthz`` needs the token when there is one)::

    /                    the page (index.html with style.css and app.js inlined; nothing else on
                         disk is served)
    /ws                  WebSocket: video, per-frame records, statistics (below)
    /video/{sid}.mjpg    MJPEG (multipart/x-mixed-replace) of source sid, for tools (ffplay, VLC,
                         OpenCV, an <img> elsewhere); the page itself uses /ws
    /metrics             Prometheus text format (version 0.0.4)
    /healthz             200 {"status": "ok", "frames_out": N, "last_frame_age_s": s | null}; no token

``/ws`` messages, server -> client:

* text, **no** ``"type"`` key: a frame record, exactly the JSON Lines schema of
  :func:`stream.sinks.frame_record` (``source_id, frame_id, pts, t_capture_ns, epoch, people``), one
  per frame written, every source (a viewer that falls 256 records behind loses the oldest);
* text ``{"type": "hello", "protocol": 1, "sources": [...], "max_viewers", "hud_interval_s", "model"?}``
  first;
* text ``{"type": "hud", "viewers", "max_viewers", "jpeg_encoded", "uptime_s", "sources": {"0": {"name",
  "size", "fps", "frames_out", "frames_dropped", "reconnects", "epoch", "ended", "last_frame_id",
  "last_frame_age_s", "latency_ms": {stage: median of the last 60 frames, "capture_to_output": ...},
  "capture_to_output_ms": {"p50", "p95", "p99"} (whole run), "recent": [[frame_id, ms], ...] (last 64),
  "viewer_drops"}}, "you": {"frames_dropped", "records_dropped"}}`` every 0.5 s;
* binary: ``uint32 big-endian n | n bytes JSON header | JPEG``, header ``{"type": "jpeg", "source_id",
  "frame_id", "epoch", "t_capture_ns", "age_ms" (capture to send), "skipped" (frames of that source
  this viewer skipped since its previous one)}``; only for subscribed sources, and only while the
  viewer has credit.

client -> server: ``{"type": "subscribe", "sources": [0, 1], "credits": 2}`` (video of those sources;
``credits``: frames in flight per source, 1..8; no subscription: no video) and ``{"type": "ready",
"source_id": 0}`` after showing a frame (one more credit). The credits make the video a pull: a
frame is sent only to a viewer that has shown the previous ones, and it is the newest one.

Security: a non-loopback host gets a token (``secrets.token_urlsafe``) unless one is given; it is
checked on every endpoint but ``/healthz`` (``?token=`` or ``Authorization: Bearer``), 401 otherwise.
Without a token (loopback only) a request whose ``Host`` is not a loopback name is refused (403: DNS
rebinding); a WebSocket handshake whose ``Origin`` is another site is refused (403). Responses carry
a strict Content-Security-Policy (the page's two inline blocks by hash, ``connect-src 'self'``), no
caching, ``nosniff``, ``no-referrer``, no framing; no access log (tokens travel in URLs).
"""
from posestream.stream.web.sink import ServeError, WebSink, parse_serve

__all__ = ["WebSink", "ServeError", "parse_serve"]
