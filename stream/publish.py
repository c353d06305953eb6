"""Live keypoints over ZeroMQ: a PUB socket that other programs subscribe to.

:class:`PublishSink` binds a ZeroMQ PUB socket (``tcp://HOST:PORT`` or ``ipc://PATH``) and
publishes one message per frame, a two-part message:

* part 0, the topic: the source id as ASCII digits (``b"0"``, ``b"1"``, ...);
* part 1, the body: the frame's JSON record, exactly a line of ``--jsonl`` (see
  :func:`stream.sinks.frame_record`): ``{"source_id", "frame_id", "pts", "t_capture_ns",
  "epoch", "people": [{"track_id", "score", "keypoints": [[x, y, score], ...]}]}``, UTF-8,
  compact, no trailing newline.

ZeroMQ topics are prefixes: subscribing to ``b"1"`` also delivers sources 10..19; compare the
topic exactly when that matters (``posestream listen --topic`` does).

Publishing never blocks the pipeline: messages are sent with ``NOBLOCK``. Each subscriber has its
own queue of up to ``hwm`` messages (plus what the OS buffers); a subscriber that reads too slowly
loses the newest messages while its queue is full, and only it does (the ZeroMQ PUB contract;
those per-subscriber drops are invisible to the publisher: a subscriber sees them as gaps in
``frame_id``). With ``nodrop=True`` the socket refuses a message while any subscriber's queue is
full instead; the message then reaches nobody and counts in ``dropped``.

A subscriber that connects late misses what was published before (PUB/SUB keeps no history), and
one that has just connected may miss the first messages while its subscription travels to the
publisher ("slow joiner").

Listening: ``posestream listen tcp://127.0.0.1:5555`` prints one JSON line per message.
"""
from __future__ import annotations

import ipaddress
import json
import logging
import re
from dataclasses import dataclass

import zmq

from posestream.stream.messages import Frame
from posestream.stream.sinks import Sink, frame_record

__all__ = ["PublishSink", "PublishError", "AddressError", "Address", "parse_address", "DEFAULT_ADDRESS"]

LOG = logging.getLogger(__name__)

DEFAULT_ADDRESS = "tcp://127.0.0.1:5555"

_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.\-_]*[A-Za-z0-9])?$")


class AddressError(ValueError):
    """An address that cannot be parsed (one line, a user error: exit status 2)."""

    user_error = True


class PublishError(OSError):
    """The address cannot be bound (port in use, no such interface): one line, a user error."""

    user_error = True


@dataclass(frozen=True)
class Address:
    """A parsed ZeroMQ endpoint.

    Attributes:
        scheme: ``tcp`` or ``ipc``.
        host: tcp: an IPv4 address, an IPv6 address (without brackets), a host or interface name,
            or ``*`` (every interface); ipc: ``""``.
        port: tcp: 1..65535, or 0 for "any free port" (bind only); ipc: 0.
        path: ipc: the socket path; tcp: ``""``.
    """

    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    @property
    def ipv6(self) -> bool:
        return self.scheme == "tcp" and ":" in self.host

    @property
    def loopback(self) -> bool:
        """Reachable from this host only: ipc, or tcp on 127.0.0.0/8, ::1 or ``localhost``."""
        if self.scheme == "ipc":
            return True
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    def endpoint(self) -> str:
        """The string ZeroMQ takes (port 0 becomes ``*``: any free port)."""
        if self.scheme == "ipc":
            return f"ipc://{self.path}"
        host = f"[{self.host}]" if self.ipv6 else self.host
        return f"tcp://{host}:{self.port or '*'}"


def parse_address(address: str, bind: bool = True) -> Address:
    """Parse and check ``tcp://HOST:PORT`` or ``ipc://PATH``.

    ``bind``: the address is bound (a publisher): host ``*`` (every interface) and port ``0`` or
    ``*`` (any free port) are allowed; otherwise (a subscriber connecting) they are not.

    Raises:
        AddressError: another scheme, no port, a port out of range, a malformed host, an empty
            ipc path; the message is one line and names the address.
    """
    if not isinstance(address, str) or not address.strip():
        raise AddressError(f"address must be tcp://HOST:PORT or ipc://PATH, got {address!r}")
    addr = address.strip()
    scheme, sep, rest = addr.partition("://")
    scheme = scheme.lower()
    if not sep:
        raise AddressError(f"address {addr!r}: expected tcp://HOST:PORT or ipc://PATH")
    if scheme == "ipc":
        if not rest or any(c in rest for c in "\0\n\r"):
            raise AddressError(f"address {addr!r}: ipc:// needs a socket path, e.g. ipc:///tmp/posestream.sock")
        return Address("ipc", path=rest)
    if scheme != "tcp":
        raise AddressError(f"address {addr!r}: unsupported scheme {scheme + '://'!r} (use tcp:// or ipc://)")
    if rest.startswith("["):
        host, bracket, tail = rest[1:].partition("]")
        if not bracket or not tail.startswith(":"):
            raise AddressError(f"address {addr!r}: expected tcp://[IPV6]:PORT")
        port_s = tail[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise AddressError(f"address {addr!r}: {host!r} is not an IPv6 address") from None
    else:
        host, colon, port_s = rest.rpartition(":")
        if not colon:
            raise AddressError(f"address {addr!r}: no port (expected tcp://HOST:PORT)")
        if host != "*" and not _HOST_RE.match(host):
            raise AddressError(f"address {addr!r}: malformed host {host!r}")
    if not host:
        raise AddressError(f"address {addr!r}: no host (expected tcp://HOST:PORT)")
    if host == "*" and not bind:
        raise AddressError(f"address {addr!r}: '*' can only be bound; connect to a host")
    if port_s == "*":
        port = 0
    elif port_s.isdigit() and len(port_s) <= 5 and int(port_s) <= 65535:
        port = int(port_s)
    else:
        raise AddressError(f"address {addr!r}: port must be 1..65535, got {port_s!r}")
    if port == 0 and not bind:
        raise AddressError(f"address {addr!r}: port must be 1..65535 to connect")
    return Address("tcp", host=host, port=port)


def _strerror(e: zmq.ZMQError) -> str:
    """``Address already in use`` -> ``address already in use`` (without pyzmq's ``(addr=...)``)."""
    text = zmq.strerror(e.errno) if e.errno else (str(e) or type(e).__name__)
    text = " ".join(text.split()).rstrip(".")
    return text[:1].lower() + text[1:]


class PublishSink(Sink):
    """Publish every frame's keypoints on a ZeroMQ PUB socket (see the module docstring).

    Args:
        address: ``tcp://HOST:PORT`` (port 0 or ``*``: any free port, see :attr:`address` after
            :meth:`open`) or ``ipc://PATH``. The default listens on loopback only; a non-loopback
            host (``tcp://*:5555``, ``tcp://0.0.0.0:5555``) publishes to the network and is used
            only when given: the caller decides (the keypoints are not encrypted or authenticated).
        hwm: per-subscriber queue length in messages (``SNDHWM``), >= 1.
        nodrop: refuse a message while any subscriber's queue is full (it then reaches nobody and
            counts in ``dropped``), instead of ZeroMQ's silent per-subscriber drops.
        linger_s: at :meth:`close`, how long messages still queued may take to leave.

    Raises:
        AddressError (a ValueError): at construction, for an address that does not parse.
        PublishError (an OSError): at :meth:`open`, when the address cannot be bound.

    Attributes:
        address: the address given; after :meth:`open` the bound endpoint (the actual port).
        sent: messages handed to ZeroMQ.
        dropped: messages not sent (refused by a full queue with ``nodrop``, or a frame whose
            record could not be serialised).
    """

    name = "publish"
    needs_image = False

    def __init__(self, address: str = DEFAULT_ADDRESS, hwm: int = 100, nodrop: bool = False,
                 linger_s: float = 0.2, keys: str | None = None) -> None:
        self._addr = parse_address(address, bind=True)
        self.keys = keys   # CurveZMQ: the keys folder (server.key_secret, authorized/): known subscribers only
        self._auth = None
        if isinstance(hwm, bool) or not isinstance(hwm, int) or hwm < 1:
            raise ValueError(f"hwm must be an integer >= 1, got {hwm!r}")
        self.address = str(address).strip()
        self.hwm = hwm
        self.nodrop = bool(nodrop)
        self.linger_s = float(linger_s)
        self.sent = 0
        self.dropped = 0
        self._ctx: zmq.Context | None = None
        self._sock: zmq.Socket | None = None
        self._bad_records = 0

    @property
    def loopback(self) -> bool:
        """Only this host can subscribe (ipc, or a loopback tcp address)."""
        return self._addr.loopback

    def open(self, meta: dict | None = None) -> None:
        """Bind the socket, so that an address in use fails the run before its first frame.

        Raises:
            PublishError: ``cannot publish on tcp://127.0.0.1:5555: address already in use``.
        """
        if self._sock is not None:
            return
        ctx = zmq.Context()
        sock = ctx.socket(zmq.PUB)
        try:
            sock.setsockopt(zmq.SNDHWM, self.hwm)
            sock.setsockopt(zmq.LINGER, max(0, int(self.linger_s * 1000)))
            if self._addr.ipv6:
                sock.setsockopt(zmq.IPV6, 1)
            if self.nodrop:
                sock.setsockopt(zmq.XPUB_NODROP, 1)
            if self.keys is not None:
                from .secure import Authenticator, apply, server_options

                apply(sock, server_options(self.keys))
                import os

                self._auth = Authenticator(ctx, os.path.join(self.keys, "authorized"), "publish")
            sock.bind(self._addr.endpoint())
            endpoint = sock.getsockopt(zmq.LAST_ENDPOINT)
        except (zmq.ZMQError, ValueError) as e:   # (ValueError: a key file the authenticator cannot use)
            sock.close(0)
            if self._auth is not None:
                self._auth.close()
                self._auth = None
            ctx.term()
            why = _strerror(e) if isinstance(e, zmq.ZMQError) else str(e)
            raise PublishError(f"cannot publish on {self.address}: {why}") from None
        self._ctx, self._sock = ctx, sock
        if isinstance(endpoint, bytes) and endpoint:
            self.address = endpoint.decode()
        LOG.info("publishing keypoints on %s%s%s", self.address, "" if self.loopback else " (network)",
                 " (CurveZMQ)" if self.keys else "")

    def write(self, frame: Frame) -> None:
        """Publish the frame's record; never blocks (a refused message counts in ``dropped``)."""
        if self._sock is None:
            self.open()
        try:
            body = json.dumps(frame_record(frame), separators=(",", ":"), allow_nan=False).encode()
        except (TypeError, ValueError) as e:
            self.dropped += 1
            if self._bad_records == 0:
                LOG.warning("publish: frame %s of source %s cannot be serialised (%s); dropped",
                            frame.frame_id, frame.source_id, e)
            self._bad_records += 1
            return
        try:
            self._sock.send_multipart([str(int(frame.source_id)).encode(), body], flags=zmq.NOBLOCK)
        except zmq.Again:
            self.dropped += 1
            return
        self.sent += 1

    def close(self) -> None:
        """Close the socket (messages still queued get ``linger_s`` to leave). Safe to call again."""
        sock, ctx = self._sock, self._ctx
        self._sock = self._ctx = None
        if sock is not None:
            sock.close()
        if self._auth is not None:
            self._auth.close()
            self._auth = None
        if ctx is not None:
            ctx.term()

    def summary(self) -> dict:
        return {"publish": {"address": self.address, "sent": self.sent, "dropped": self.dropped}}
