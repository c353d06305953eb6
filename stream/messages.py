"""What travels between pipeline stages, and its wire format (no pickle).

A :class:`Frame` is one captured image and everything later stages add to it (people, track ids,
timings). On a ZeroMQ socket it is a multipart message: part 0 a small JSON header (ids, capture
timestamp, shapes, dtypes, timings), then one raw buffer per array (image pixels, keypoints,
scores, track ids), sent without copies where ZeroMQ allows. Arrays are rebuilt with
``np.frombuffer`` on the received buffers (no copy).

A link may carry the image out of band instead (:mod:`stream.transport`'s shared-memory ring):
``encode(frame, image_ref={...})`` then leaves the pixels out of the message and writes the
reference (plus the image's shape and dtype) into the header as ``"image_ref"``; ``decode`` hands
that reference to its ``resolve_image`` callback, which returns the array. A message with an
``image_ref`` cannot be decoded without one (``ValueError``), so a frame never silently loses its
image.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Frame", "People", "encode", "decode", "now_ns", "WIRE_VERSION"]

WIRE_VERSION = 3  # 2: optional out-of-band "image_ref" (shared-memory ring); 3: "meta" control frames


def now_ns() -> int:
    """Monotonic clock in ns: the only clock stages use for latency (same host)."""
    return time.monotonic_ns()


@dataclass
class People:
    """People of one frame, in source-image pixels.

    keypoints: (N, K, 3) float32 x, y, score; scores: (N,) float32; track_ids: (N,) int64
    (-1 before tracking, -2 tentative: see stream/track.py).
    """

    keypoints: np.ndarray
    scores: np.ndarray
    track_ids: np.ndarray

    @classmethod
    def empty(cls, k: int = 17) -> "People":
        return cls(np.zeros((0, k, 3), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))

    def __len__(self) -> int:
        return int(self.scores.shape[0])


@dataclass
class Frame:
    """One captured image and what the stages added.

    Attributes:
        source_id: index of the source (several ``--source`` at once).
        frame_id: per-source frame counter, from 0, increasing by 1 for every captured frame
            (frames dropped later leave gaps downstream, which is how drops are counted).
        t_capture_ns: capture time (:func:`now_ns`), set once at the source.
        epoch: stream epoch; a new one starts after a reconnect or resolution change, so
            stateful stages (trackers, filters) reset instead of bridging the gap.
        pts: presentation time in seconds from the source (file pts; for live sources the
            capture time relative to the stream's start).
        image: (H, W, 3) uint8 RGB.
        people: decoded people (None before inference).
        timings: stage name -> (start_ns, end_ns) of its processing.
        info: small JSON-serialisable extras (source name, fps, flags).
        eos: end of stream marker (image may be None).
        meta: a control frame that carries the upstream stage's metadata (the model's skeleton and
            outputs, ...) instead of an image: the first message a stage sends downstream. Like
            end-of-stream markers, control frames are never dropped.
    """

    source_id: int
    frame_id: int
    t_capture_ns: int
    epoch: int = 0
    pts: float | None = None
    image: np.ndarray | None = None
    people: People | None = None
    timings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)
    eos: bool = False
    meta: dict | None = None

    @property
    def control(self) -> bool:
        """End-of-stream marker or metadata: never dropped by a live link."""
        return self.eos or self.meta is not None


def _array_meta(a: np.ndarray) -> dict:
    return {"shape": list(a.shape), "dtype": a.dtype.str}


def encode(frame: Frame, image_ref: dict | None = None, ack: dict | None = None) -> list:
    """Frame -> multipart parts: [header JSON bytes, buffers...] (buffers are not copied).

    ``image_ref``: the image travels out of band (already written where the reference says, e.g.
    a shared-memory slot); the header carries ``image_ref`` plus the image's shape and dtype, and
    no image buffer is sent.
    """
    arrays: list[tuple[str, np.ndarray]] = []
    ref = None
    if frame.image is not None:
        if image_ref is None:
            arrays.append(("image", np.ascontiguousarray(frame.image)))
        else:
            ref = {**image_ref, **_array_meta(frame.image)}
    if frame.people is not None:
        arrays += [("keypoints", np.ascontiguousarray(frame.people.keypoints, np.float32)),
                   ("scores", np.ascontiguousarray(frame.people.scores, np.float32)),
                   ("track_ids", np.ascontiguousarray(frame.people.track_ids, np.int64))]
    header = {"v": WIRE_VERSION, "source_id": frame.source_id, "frame_id": frame.frame_id,
              "t_capture_ns": frame.t_capture_ns, "epoch": frame.epoch, "pts": frame.pts,
              "timings": frame.timings, "info": frame.info, "eos": frame.eos, "meta": frame.meta,
              "arrays": [[name, _array_meta(a)] for name, a in arrays]}
    if ref is not None:
        header["image_ref"] = ref
    if ack is not None:
        header["ack"] = ack
    return [json.dumps(header, separators=(",", ":")).encode()] + [_raw(a) for _, a in arrays]


def _raw(a: np.ndarray):
    """A byte view of a contiguous array (no copy); empty arrays travel as empty parts."""
    return memoryview(a.reshape(-1).view(np.uint8)) if a.size else b""


def decode(parts: list, resolve_image=None, on_ack=None) -> Frame:
    """Multipart parts (bytes or zmq.Frame) -> Frame. Raises ValueError on a malformed message.

    ``resolve_image(ref) -> np.ndarray`` rebuilds an out-of-band image from the header's
    ``image_ref`` (a dict with at least ``shape`` and ``dtype``); required when there is one.
    ``on_ack(ack)`` is called with the header's ``ack`` (a message without pixels in the ring that
    the sender wants acknowledged, see :mod:`stream.transport`).
    """
    try:
        header = json.loads(bytes(parts[0]))
    except (ValueError, IndexError) as e:
        raise ValueError(f"malformed frame header: {e}") from None
    if header.get("v") != WIRE_VERSION:
        raise ValueError(f"wire version {header.get('v')} != {WIRE_VERSION}")
    specs = header["arrays"]
    if len(parts) != 1 + len(specs):
        raise ValueError(f"frame has {len(parts) - 1} buffers, header lists {len(specs)}")
    arrays = {}
    for (name, meta), part in zip(specs, parts[1:]):
        buf = part.buffer if hasattr(part, "buffer") else part
        a = np.frombuffer(buf, dtype=np.dtype(meta["dtype"]))
        arrays[name] = a.reshape(meta["shape"])
    if on_ack is not None and isinstance(header.get("ack"), dict):
        on_ack(header["ack"])
    ref = header.get("image_ref")
    if ref is not None:
        if resolve_image is None:
            raise ValueError("frame image is out of band (shared memory); receive it with stream.transport.Receiver")
        if "image" in arrays:
            raise ValueError("frame has both an inline image and an image_ref")
        arrays["image"] = resolve_image(ref)
    people = None
    if "keypoints" in arrays:
        people = People(arrays["keypoints"], arrays["scores"], arrays["track_ids"])
    return Frame(source_id=header["source_id"], frame_id=header["frame_id"], t_capture_ns=header["t_capture_ns"],
                 epoch=header["epoch"], pts=header["pts"], image=arrays.get("image"), people=people,
                 timings=header["timings"], info=header["info"], eos=header["eos"], meta=header.get("meta"))
