"""RTSP cameras through PyAV: bounded start-up, reconnection with backoff, outage accounting."""
from __future__ import annotations

import ipaddress
import logging
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Iterator
from urllib.parse import urlsplit

from posestream.stream.messages import Frame, now_ns

from .base import Source, SourceError, _count, _fps, _from_dict, _positive, _short

__all__ = ["RtspConfig", "RtspSource"]

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class RtspConfig:
    """RTSP options.

    Attributes:
        transport: ``tcp`` (no losses, the default) or ``udp``.
        open_timeout_s: give up one connection attempt after this long; resolving the host name
            has a budget of its own of the same length (see :class:`RtspSource`).
        read_timeout_s: a stream that delivers nothing for this long counts as lost.
        low_delay: ``fflags=nobuffer`` and ``flags=low_delay``: no buffering of what the stream
            analysis read (decoding starts at the next keyframe) and no decoder delay.
        analyze_s: how long FFmpeg may read to learn the stream's parameters (``analyzeduration``);
            the SDP usually carries them, so a short time opens faster.
        backoff_initial_s, backoff_factor, backoff_max_s: the wait before retry n (n >= 1 after a
            failure) is ``min(initial * factor ** (n - 1), max)``; a lost stream that had delivered
            frames is retried at once.
        start_attempts: consecutive failed attempts allowed before the source's first frame
            (an unreachable camera at start); then :class:`SourceError`. With the defaults an
            unreachable camera fails after about 1.5 s plus the time the attempts themselves take.
        max_attempts: consecutive failed attempts before :class:`SourceError` once the stream had
            delivered frames (reconnecting); None: forever. It also caps ``start_attempts``.
        options: further FFmpeg options (strings), applied last.
    """

    transport: str = "tcp"
    open_timeout_s: float = 5.0
    read_timeout_s: float = 5.0
    low_delay: bool = True
    analyze_s: float = 0.5
    backoff_initial_s: float = 0.5
    backoff_factor: float = 2.0
    backoff_max_s: float = 10.0
    start_attempts: int = 3
    max_attempts: int | None = None
    options: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.transport not in ("tcp", "udp", "udp_multicast", "http", "https"):
            raise ValueError(f"transport must be tcp, udp, udp_multicast, http or https, got {self.transport!r}")
        for name in ("open_timeout_s", "read_timeout_s", "backoff_initial_s", "backoff_max_s", "analyze_s"):
            _positive(name, getattr(self, name))
        if isinstance(self.backoff_factor, bool) or not isinstance(self.backoff_factor, (int, float)) \
                or self.backoff_factor < 1:
            raise ValueError(f"backoff_factor must be a number >= 1, got {self.backoff_factor!r}")
        _count("start_attempts", self.start_attempts)
        _count("max_attempts", self.max_attempts, none="forever")
        if not isinstance(self.options, dict):
            raise ValueError(f"options must be a mapping of FFmpeg options, got {self.options!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "RtspConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return _from_dict(cls, d, "rtsp")

    def av_options(self) -> dict[str, str]:
        """The options handed to ``av.open`` (FFmpeg's RTSP demuxer and format options)."""
        opts = {"rtsp_transport": self.transport,
                # socket I/O timeout in microseconds: a dead server ends a blocked read
                "timeout": str(int(self.read_timeout_s * 1e6)),
                "analyzeduration": str(int(self.analyze_s * 1e6))}
        if self.low_delay:
            opts.update({"fflags": "nobuffer", "flags": "low_delay"})
        opts.update({str(k): str(v) for k, v in self.options.items()})
        return opts

    def backoff_s(self, failures: int) -> float:
        """Seconds to wait before the next attempt after ``failures`` consecutive failures (>= 1)."""
        return min(self.backoff_initial_s * self.backoff_factor ** (failures - 1), self.backoff_max_s)


def _url_host(url: str) -> str | None:
    """The host name of url that needs resolving; None for an IP address or no host at all."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return host
    return None


class _Lookup:
    """``socket.getaddrinfo(host)`` in a daemon thread, so that a hanging resolver cannot block us."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.done = threading.Event()
        self.error: BaseException | None = None
        threading.Thread(target=self._run, name=f"resolve-{host}", daemon=True).start()

    def _run(self) -> None:
        try:
            socket.getaddrinfo(self.host, None, type=socket.SOCK_STREAM)
        except BaseException as e:  # gaierror (an OSError) mostly; reported to the source
            self.error = e
        finally:
            self.done.set()


class RtspSource(Source):
    """An RTSP stream (PyAV, TCP by default) that reconnects with exponential backoff.

    :meth:`open` connects (with retries) so that an unreachable camera fails there: until the
    source's first frame at most ``start_attempts`` consecutive attempts fail (a connection that
    ends before its first frame counts as a failed attempt), then :class:`SourceError`
    ``"<url>: unreachable after N attempts (last error: ...)"``. Once frames came, a lost stream is
    retried at once and then with backoff, ``max_attempts`` times (None: forever).

    An attempt first resolves the URL's host name itself, in a daemon thread given
    ``open_timeout_s`` (FFmpeg's name lookup is blocking and ignores every timeout), so a host
    that does not resolve, or a resolver that does not answer, is a failed attempt
    (``cannot resolve host ...``) within ``open_timeout_s``; ``av.open`` then resolves the name
    again, normally from the resolver's cache. ``av.open`` itself ends within
    ``min(open_timeout_s, read_timeout_s)``.

    Every connection's first frame starts a new epoch (the first is epoch 0), and a successful
    reconnection counts in ``reconnects``. ``frame_id`` keeps counting across reconnects.
    Call :meth:`stop` from another thread to end the source: a wait for the next attempt (backoff)
    or for a name lookup ends at once; an ``av.open`` in progress cannot be interrupted and ends
    within its timeout, after which ``open()`` raises (``stopped before connecting``) or the
    iteration ends. Call ``close`` from the consuming thread.

    Attributes:
        attempts: connection attempts, all of them.
        reconnects: successful reconnections after a lost stream.
        outages: times a stream that had delivered frames was lost.
        outage_s: seconds without video from those losses: from the last frame of the lost
            connection to the first frame of the next one (a stall counts from when frames
            stopped, not from when the read timeout noticed it); an outage still going on counts
            up to now, or up to ``close``.
    """

    kind = "rtsp"

    def __init__(self, url: str, source_id: int = 0, config: RtspConfig | None = None) -> None:
        super().__init__(url, source_id)
        self.config = config or RtspConfig()
        self.attempts = 0
        self.outages = 0
        self._outage_ns = 0  # finished outages
        self._outage_t0: int | None = None  # the last frame before the outage going on
        self._last_frame_t: int | None = None
        self._stop = threading.Event()
        self._container = None
        self._decoded: Iterator | None = None
        self._failures = 0  # consecutive failures (failed opens, connections without a frame)
        self._last_error = ""
        self._fresh = False  # no frame yet from the current connection
        self._t0: int | None = None
        self._host = _url_host(self.spec)
        self._lookup: _Lookup | None = None

    @property
    def outage_s(self) -> float:
        ns = self._outage_ns
        if self._outage_t0 is not None:
            ns += now_ns() - self._outage_t0
        return ns / 1e9

    def stop(self) -> None:
        """Ask the source to end (thread-safe); see the class docstring for how soon it does."""
        self._stop.set()

    def _open(self) -> None:
        if not self._connect():
            raise SourceError(f"{self.spec}: stopped before connecting")

    def _attempt_limit(self) -> int | None:
        """Consecutive failures allowed now: start_attempts until the first frame, then max_attempts."""
        cfg = self.config
        if self.frames == 0:
            return cfg.start_attempts if cfg.max_attempts is None else min(cfg.start_attempts, cfg.max_attempts)
        return cfg.max_attempts

    def _connect(self) -> bool:
        """Connect, retrying with backoff. False if stopped; SourceError after too many failures."""
        import av

        cfg = self.config
        while not self._stop.is_set():
            limit = self._attempt_limit()
            if limit is not None and self._failures >= limit:
                raise SourceError(f"{self.spec}: unreachable after {self._failures} attempts "
                                  f"(last error: {self._last_error})")
            if self._failures:
                delay = cfg.backoff_s(self._failures)
                LOG.warning("%s: %s; retrying in %.1f s (failure %d%s)", self.spec, self._last_error, delay,
                            self._failures, f" of {limit}" if limit else "")
                if self._stop.wait(delay):
                    break
            self.attempts += 1
            problem = self._resolve()
            if self._stop.is_set():
                break
            if problem:
                self._failed(problem)
                continue
            started = time.monotonic()
            try:
                container = av.open(self.spec, options=cfg.av_options(),
                                    timeout=(cfg.open_timeout_s, cfg.read_timeout_s))
            except (av.error.FFmpegError, OSError) as e:
                waited = time.monotonic() - started
                reason = _short(e)
                if waited >= 0.9 * min(cfg.open_timeout_s, cfg.read_timeout_s):
                    # a timeout surfaces as whatever FFmpeg was doing ("Invalid data found ..."): say so
                    reason = f"no answer within {waited:.1f} s ({reason})"
                self._failed(reason)
                continue
            if not container.streams.video:
                container.close()
                self._failed("no video stream")
                continue
            if self._stop.is_set():
                container.close()
                break
            stream = container.streams.video[0]
            self._container = container
            self._decoded = container.decode(stream)
            self.fps = _fps(stream)
            self._fresh = True
            LOG.info("%s: connected (%s, %dx%d)", self.spec, stream.codec_context.name, stream.width, stream.height)
            return True
        return False

    def _failed(self, reason: str) -> None:
        self._failures += 1
        self._last_error = reason

    def _resolve(self) -> str | None:
        """Resolve the URL's host within open_timeout_s: None if done (or stopped), else why not."""
        host = self._host
        if host is None:
            return None
        if self._lookup is None or self._lookup.done.is_set():
            self._lookup = _Lookup(host)  # else: the previous attempt's lookup still runs; wait for it
        lookup = self._lookup
        timeout = self.config.open_timeout_s
        deadline = time.monotonic() + timeout
        while not lookup.done.wait(min(0.05, max(0.0, deadline - time.monotonic()))):
            if self._stop.is_set():
                return None
            if time.monotonic() >= deadline:
                return f"cannot resolve host {host} (no answer within {timeout:g} s)"
        if lookup.error is not None:
            return f"cannot resolve host {host} ({_short(lookup.error)})"
        return None

    def _read(self) -> Frame | None:
        import av

        while not self._stop.is_set():
            if self._decoded is None and not self._connect():
                break
            try:
                frame = next(self._decoded)
            except StopIteration:
                reason = "stream ended"
            except (av.error.FFmpegError, OSError) as e:
                reason = f"stream lost ({_short(e)})"
            else:
                return self._live_frame(frame)
            self._disconnect()
            if self._fresh:  # this connection never delivered a frame: a failed attempt
                self._failures += 1
            else:  # a stream that delivered frames is lost: an outage begins at its last frame
                self.outages += 1
                self._outage_t0 = self._last_frame_t
            self._last_error = reason
            LOG.warning("%s: %s; reconnecting", self.spec, reason)
        return None

    def _live_frame(self, frame) -> Frame:
        image = frame.to_ndarray(format="rgb24")
        t = now_ns()
        if self._fresh:
            self._fresh = False
            self._failures = 0
            if self._outage_t0 is not None:
                self._outage_ns += t - self._outage_t0
                self._outage_t0 = None
            if self._epoch_started:  # an earlier connection delivered frames
                self.reconnects += 1
                self._new_epoch("reconnected")
                self._size = None  # the new epoch already covers a size change
        if self._t0 is None:
            self._t0 = t
        self._last_frame_t = t
        return self._frame(image, t, (t - self._t0) / 1e9)

    def _disconnect(self) -> None:
        if self._decoded is not None:
            self._decoded.close()
            self._decoded = None
        if self._container is not None:
            try:
                self._container.close()
            except Exception as e:  # a broken connection may fail its TEARDOWN; it is gone anyway
                LOG.debug("%s: close: %s", self.spec, e)
            self._container = None

    def _close(self) -> None:
        self._stop.set()
        self._disconnect()
        if self._outage_t0 is not None:  # an outage still going on ends with the source
            self._outage_ns += now_ns() - self._outage_t0
            self._outage_t0 = None
