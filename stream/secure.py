"""CurveZMQ for the links that cross hosts (``tcp://``): key files, the servers' authentication
handler, and the socket options of both ends.

Keys (``posestream keys DIR``): a key pair is two text files in ZeroMQ's certificate format (what
``zmq.auth`` and czmq read): ``NAME.key`` holds the public key, ``NAME.key_secret`` the public and
the secret key (mode 0600). ``server`` is the pipeline's pair; every worker has its own. The folder
``authorized/`` holds the public keys (``*.key``) of the workers the pipeline accepts: a worker
whose key is not there is refused (the handshake fails; the pipeline logs the refused key and the
address it came from).

Authentication: ZeroMQ asks the process's ZAP handler (RFC 27, ``inproc://zeromq.zap.01``) about
every CURVE handshake; :class:`Authenticator` answers from the ``authorized/`` folder, read again
when it changes (so a key added during a run is accepted from then on).

Every message on these links is JSON or raw image bytes, as on the local links (no pickle).
"""
from __future__ import annotations

import ipaddress
import logging
import os
import threading
from pathlib import Path

import zmq
import zmq.utils.z85

LOG = logging.getLogger(__name__)

__all__ = ["KeyFileError", "make_pair", "load_public", "load_secret", "Authenticator", "server_options",
           "client_options", "apply", "check_tcp_address", "is_loopback", "connect_setup", "StopOnSignals"]

SERVER = "server"


class KeyFileError(ValueError):
    """A key file that is missing or not a key (one line: which file and why)."""


def make_pair(folder: str | os.PathLike, name: str) -> tuple[Path, Path]:
    """Write ``NAME.key`` and ``NAME.key_secret`` (0600) in ``folder``; -> their paths. An existing
    pair is kept (never overwritten: a worker's key may already be authorized somewhere)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pub, sec = folder / f"{name}.key", folder / f"{name}.key_secret"
    if pub.exists() or sec.exists():
        raise KeyFileError(f"{sec if sec.exists() else pub}: exists; not overwritten (remove it to make a new pair)")
    public, secret = zmq.curve_keypair()
    head = "#   ZeroMQ CURVE {} certificate (posestream keys)\n#   {}\nmetadata\ncurve\n"
    pub.write_text(head.format("public", "give this file to the other side") +
                   f'    public-key = "{public.decode()}"\n')
    fd = os.open(sec, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(head.format("secret", "keep this file on this host; never copy it") +
                f'    public-key = "{public.decode()}"\n    secret-key = "{secret.decode()}"\n')
    return pub, sec


def _read(path: str | os.PathLike, secret: bool) -> tuple[bytes, bytes | None]:
    import zmq.auth

    p = Path(path)
    if not p.is_file():
        raise KeyFileError(f"{p}: no such key file")
    try:
        public, sec = zmq.auth.load_certificate(str(p))
    except Exception as e:  # noqa: BLE001 - zmq.auth raises ValueError/IOError/... for a bad file
        raise KeyFileError(f"{p}: not a ZeroMQ key file ({' '.join(str(e).split()) or type(e).__name__})") from None
    if not public or len(public) != 40 or (secret and (not sec or len(sec) != 40)):
        raise KeyFileError(f"{p}: {'no secret key in it (give the .key_secret file)' if secret else 'no public key in it'}")
    return public, sec


def load_public(path) -> bytes:
    return _read(path, secret=False)[0]


def load_secret(path) -> tuple[bytes, bytes]:
    """-> (public, secret) of a ``.key_secret`` file."""
    public, sec = _read(path, secret=True)
    return public, sec


def server_options(keys: str | os.PathLike) -> dict:
    """Socket options of a CURVE server (the pipeline's tcp sockets) from the keys folder."""
    public, secret = load_secret(Path(keys) / f"{SERVER}.key_secret")
    return {zmq.CURVE_SERVER: 1, zmq.CURVE_PUBLICKEY: public, zmq.CURVE_SECRETKEY: secret}


def client_options(secret_file, server_public_file) -> dict:
    """Socket options of a CURVE client (a worker's sockets): its own pair, the server's public key."""
    public, secret = load_secret(secret_file)
    return {zmq.CURVE_SERVERKEY: load_public(server_public_file), zmq.CURVE_PUBLICKEY: public,
            zmq.CURVE_SECRETKEY: secret}


def apply(sock: zmq.Socket, options: dict | None) -> None:
    """Set ``options`` on ``sock`` (before it binds or connects)."""
    for k, v in (options or {}).items():
        sock.setsockopt(k, v)


def is_loopback(host: str) -> bool:
    if host in ("localhost",):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_tcp_address(address: str, what: str) -> tuple[str, int]:
    """``tcp://HOST:PORT`` -> (host, port), or a ValueError that says what is wrong."""
    if not isinstance(address, str) or not address.startswith("tcp://"):
        raise ValueError(f"{what} must be tcp://HOST:PORT, got {address!r}")
    host, sep, port = address[len("tcp://"):].rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65533:
        # (a pipeline listens on PORT, PORT+1 and PORT+2)
        raise ValueError(f"{what} must be tcp://HOST:PORT with a port in 1..65533, got {address!r}")
    if ":" in host or host.startswith("["):
        raise ValueError(f"{what}: IPv6 addresses are not supported here yet; give an IPv4 address or a host "
                         f"name, got {address!r}")
    return host, int(port)


def connect_setup(connect: str, keys: str, name: str) -> tuple[str, dict]:
    """A remote process's (``posestream worker`` / ``capture``) address and CurveZMQ client options
    from its flags: -> (the pipeline's host, socket options). ValueError (one line) when the
    address or a key file is wrong."""
    host, _ = check_tcp_address(connect, "--connect")
    return host, client_options(Path(keys) / f"{name}.key_secret", Path(keys) / "server.key")


class StopOnSignals:
    """SIGINT / SIGTERM set ``event`` (and ``name``: which one) instead of raising."""

    def __init__(self) -> None:
        import signal

        self.event = threading.Event()
        self.name: str | None = None

        def on_signal(signum, _frame):
            self.name = signal.Signals(signum).name
            self.event.set()

        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, on_signal)


class Authenticator:
    """The ZAP handler of one process (a daemon thread with its own REP socket): a CURVE client is
    accepted when its public key is in ``authorized`` (a folder of ``*.key`` files); refusals are
    logged once per key and address. ``accepted`` / ``refused``: counts."""

    def __init__(self, ctx: zmq.Context, authorized: str | os.PathLike, what: str = "pipeline") -> None:
        self.folder = Path(authorized)
        if not self.folder.is_dir():
            raise KeyFileError(f"{self.folder}: no such folder (the authorized workers' public keys, *.key)")
        self.what = what
        self.accepted = 0
        self.refused = 0
        self._keys: set[bytes] = set()
        self._stamp = None
        self._reload()
        self.sock = ctx.socket(zmq.REP)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.bind("inproc://zeromq.zap.01")
        self._stop = threading.Event()
        self._logged: set[tuple[bytes, str]] = set()
        self.thread = threading.Thread(target=self._serve, name="zap", daemon=True)
        self.thread.start()

    def _reload(self) -> None:
        try:
            files = sorted(self.folder.glob("*.key"))
            stamp = tuple((f.name, f.stat().st_mtime_ns) for f in files)
        except OSError:
            return
        if stamp == self._stamp:
            return
        keys = set()
        for f in files:
            try:
                keys.add(load_public(f))
            except KeyFileError as e:
                LOG.warning("authorized keys: %s (skipped)", e)
        self._keys, self._stamp = keys, stamp

    def _serve(self) -> None:
        poller = zmq.Poller()
        poller.register(self.sock, zmq.POLLIN)
        while not self._stop.is_set():
            try:
                if not poller.poll(100):
                    continue
                msg = self.sock.recv_multipart()
            except zmq.ZMQError:
                return
            self.sock.send_multipart(self._answer(msg))

    def _answer(self, msg: list[bytes]) -> list[bytes]:
        # version, request id, domain, address, identity, mechanism, credentials...
        version, request_id = msg[0], msg[1]
        address = msg[3].decode(errors="replace") if len(msg) > 3 else "?"
        mechanism = msg[5] if len(msg) > 5 else b""
        if mechanism != b"CURVE" or len(msg) < 7:
            return [version, request_id, b"400", b"CURVE only", b"", b""]
        key = zmq.utils.z85.encode(msg[6])   # (the raw 32 bytes; the key files hold Z85 text)
        self._reload()
        if key in self._keys:
            self.accepted += 1
            return [version, request_id, b"200", b"OK", key, b""]
        self.refused += 1
        if (key, address) not in self._logged:
            self._logged.add((key, address))
            LOG.warning("%s: refused a connection from %s: key %s is not in %s", self.what, address, key.decode(),
                        self.folder)
        return [version, request_id, b"400", b"unknown key", b"", b""]

    def close(self) -> None:
        self._stop.set()
        self.thread.join(timeout=1)
        self.sock.close()
