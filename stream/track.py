"""Track + smooth: stable ids for people across frames and One Euro smoothing of their keypoints.

Association follows the usual top-down tracker recipe: every live track predicts where its pose
is now (constant velocity from its last two observations), the cost between a track and a
detection is ``1 - OKS`` (COCO's keypoint similarity with its sigmas widened by ``sigma_scale``), and the
Hungarian method picks the cheapest assignment; pairs below ``min_oks`` are not matched. The
tracker's API is norfair's: ``update(poses, t) -> tracks`` with the distance and the filter
passed in, so either can be swapped without touching the bookkeeping.

Smoothing is the One Euro filter (Casiez, Roussel, Vogel, "1€ Filter: A Simple Speed-based
Low-pass Filter for Noisy Input in Interactive Systems", CHI 2012): a first-order low-pass whose
cutoff rises with the (low-passed) speed, so a still pose is smoothed hard and a moving one lags
little. Its rate comes from the capture timestamps of successive calls, never from a nominal
frame rate, so dropped frames and irregular sources are handled (MediaPipe's
``one_euro_filter.cc`` does the same).

Rules (the choices this module makes):

- **Births.** An unmatched detection starts a *tentative* track. It is reported with id ``-1``
  until it has been matched ``min_hits`` times (the first detection counts), and it dies at the
  first update in which it is not matched (a flicker of false positives never gets an id). A
  track takes its id from the tracker's counter when it is confirmed, so the reported ids have no
  gaps left by tentative tracks that died.
- **Deaths.** A confirmed track that has not been matched for more than ``max_age_s`` seconds of
  capture time dies; the age is measured between timestamps, so it does not depend on how many
  frames (or empty frames) arrived in between.
- **Ids after a reset.** :meth:`Tracker.reset` drops every track but keeps the id counter, so an
  id is never given to two people by one tracker (a sink that writes ids to a file never joins
  two people from different epochs). Ids are per tracker, that is per source in
  :class:`TrackStage`: ``(source_id, track_id)`` names a person.
- **Keypoints with score 0** (not found) are kept out of the filter: their raw x, y (whatever the
  decoder wrote, usually 0) pass through unchanged, and the filter forgets that coordinate, so
  when the keypoint is found again its first output is the raw position (no smoothing across a
  gap in which we do not know where it went, and no pull towards the decoder's placeholder 0).
  The same keypoints are left out of OKS (visibility is score > 0, in both poses).
- **Prediction.** A track's predicted pose is its last observation shifted by the body's mean
  velocity (over the keypoints seen in both of its last two observations) times the time since
  that observation. One velocity for the body rather than one per keypoint: two noisy
  detections give a noisy velocity per keypoint, and the mean over 17 keypoints is ~4x steadier,
  which matters when an occluded person is predicted over several frames.
- **Speed in body heights.** The One Euro speed term is the keypoints' speed over the person's
  body height (``speed_unit: body``; the height from the found limbs, smoothed per track), so
  ``beta`` means the same for a 60-px pedestrian and a 600-px person at the camera: both are
  smoothed alike for the same motion relative to their size.
- **Smoothed keypoints replace raw ones** in :class:`TrackStage` (``people.keypoints``): every
  later stage (render, sinks) wants the smoothed pose, and keeping both would double the message.
  Scores are not smoothed.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import numpy as np
from scipy.optimize import linear_sum_assignment

from posestream.models.skeleton import body_height, get_skeleton
from posestream.stream.messages import Frame, now_ns
from posestream.models.config import from_section
from posestream.models.oks import oks_distance, oks_matrix

__all__ = ["OneEuroFilter", "oks_matrix", "oks_distance", "TrackerConfig", "Tracker", "TrackStage"]

LOG = logging.getLogger(__name__)

# Hungarian cost of a pair below min_oks: larger than any sum of feasible costs (each <= 1) for the
# sizes a frame has, so the assignment maximises the number of feasible pairs first.
_INFEASIBLE = 1e6


class OneEuroFilter:
    """The 1€ filter, vectorised: one independent filter per element of an array.

    Elements are filtered independently (a 2-D point is two scalar filters, as in the paper), so
    one instance smooths every coordinate of every keypoint of a track at once.

    Args:
        min_cutoff: cutoff in Hz at zero speed; lower means smoother when still, more lag.
        beta: cutoff increase per unit of speed (Hz per value-unit/s, e.g. 1/px for pixels); higher
            means less lag when moving.
        d_cutoff: cutoff in Hz of the low-pass on the derivative.
    """

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0) -> None:
        if min_cutoff <= 0 or d_cutoff <= 0:
            raise ValueError(f"cutoffs must be > 0 Hz, got min_cutoff={min_cutoff}, d_cutoff={d_cutoff}")
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self.min_cutoff = float(min_cutoff)
        self.beta = float(beta)
        self.d_cutoff = float(d_cutoff)
        self.reset()

    def reset(self) -> None:
        """Forget the state: the next call returns its input."""
        self._t: float | None = None
        self._x: np.ndarray | None = None    # filtered values
        self._dx: np.ndarray | None = None   # filtered derivative
        self._has: np.ndarray | None = None  # elements with a state (valid at the last call)
        self._out: np.ndarray | None = None  # last output

    @staticmethod
    def _alpha(cutoff, dt: float):
        tau = 1.0 / (2.0 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / dt)

    def __call__(self, x, t: float, valid=None, scale: float | None = None) -> np.ndarray:
        """Filter one sample.

        Args:
            x: array of values (any shape, the same at every call); float64 is used inside.
            t: timestamp of the sample in seconds (capture time); dt is taken from the previous call.
            valid: optional bool array broadcastable to ``x``; ``False`` elements (e.g. keypoints with
                score 0) pass through unchanged and lose their state, so they restart from their raw
                value when valid again.
            scale: the unit of the speed term: with a scale (e.g. the person's body height in px)
                the cutoff rises with speed / scale, so ``beta`` is per (scale units / s) and a
                small far person is smoothed like a large near one; None: per value unit / s.

        Returns:
            Filtered values, float64, shape of ``x`` (a new array). The first call returns ``x``;
            a call whose dt <= 0 (repeated or out-of-order timestamp) returns the previous output.
        """
        x = np.array(x, dtype=np.float64)
        ok = np.ones(x.shape, bool) if valid is None else np.broadcast_to(np.asarray(valid, bool), x.shape)
        if self._t is None:
            self._t, self._x, self._dx = float(t), x.copy(), np.zeros_like(x)
            self._has, self._out = ok.copy(), x.copy()
            return x
        if x.shape != self._x.shape:
            raise ValueError(f"filter got shape {x.shape}, was {self._x.shape}")
        dt = float(t) - self._t
        if dt <= 0:
            return self._out.copy()
        self._t = float(t)
        dx = (x - self._x) / dt
        dx_hat = self._dx + self._alpha(self.d_cutoff, dt) * (dx - self._dx)
        speed = np.abs(dx_hat) if not scale else np.abs(dx_hat) / float(scale)
        cutoff = self.min_cutoff + self.beta * speed
        x_hat = self._x + self._alpha(cutoff, dt) * (x - self._x)
        keep = ok & self._has        # continue the filter
        self._x = np.where(keep, x_hat, x)  # restart (fresh or invalid): the raw value, speed 0
        self._dx = np.where(keep, dx_hat, 0.0)
        self._has = ok.copy()
        self._out = np.where(ok, self._x, x)
        return self._out.copy()


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings.

    Attributes:
        min_oks: a detection matches a track only if distance <= 1 - min_oks (with the default
            OKS distance: OKS >= min_oks).
        max_age_s: a confirmed track unmatched for longer than this (capture seconds) dies.
        min_hits: matches (the first detection included) before a track is confirmed and gets an id.
        sigma_scale: the OKS sigmas are multiplied by this for association. COCO's sigmas measure
            how well annotators agree on a still image; between frames a small person's keypoints
            move and jitter by more than that (a 50-px-tall pedestrian: nose tolerance ~1.6 px), so
            with the raw sigmas tracks of small people break every few frames.
        predict: predict each track's pose with constant velocity before matching.
        smoothing: One Euro smoothing of the keypoints (off: the raw keypoints come back).
        min_cutoff: One Euro cutoff at zero speed, Hz.
        beta: One Euro speed coefficient: per (body heights / s) with ``speed_unit: body`` (the
            speed is the keypoints' px/s over the person's body height,
            :func:`posestream.models.skeleton.body_height`), per (px / s) with ``px``. 15 body⁻¹
            is the former 0.05 px⁻¹ for a 300-px person.
        speed_unit: ``body`` (scale-free: a small far pedestrian and a large near person are
            smoothed alike) or ``px``.
        d_cutoff: One Euro cutoff of the speed estimate, Hz.
        rescue_distance: a second association stage for what the OKS stage left: an unmatched
            track and an unmatched detection whose centres are within this many body heights (1)
            (and whose heights agree within a factor 1.5) are matched, closest first. It catches
            what OKS cannot: a person moving faster than the prediction knows (a newborn track
            has no velocity yet: at 30 % of their height per frame OKS is ~0). 0 disables it.
    """

    min_oks: float = 0.3
    max_age_s: float = 1.0
    min_hits: int = 3
    sigma_scale: float = 2.0
    predict: bool = True
    smoothing: bool = True
    min_cutoff: float = 1.0
    beta: float = 15.0
    d_cutoff: float = 1.0
    speed_unit: str = "body"
    rescue_distance: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_oks <= 1.0:
            raise ValueError(f"min_oks must be in [0, 1], got {self.min_oks}")
        if not self.sigma_scale > 0:
            raise ValueError(f"sigma_scale must be > 0, got {self.sigma_scale}")
        if self.max_age_s <= 0:
            raise ValueError(f"max_age_s must be > 0 s, got {self.max_age_s}")
        if int(self.min_hits) != self.min_hits or self.min_hits < 1:
            raise ValueError(f"min_hits must be an integer >= 1, got {self.min_hits}")
        if self.min_cutoff <= 0 or self.d_cutoff <= 0:
            raise ValueError(f"min_cutoff and d_cutoff must be > 0 Hz, got {self.min_cutoff}, {self.d_cutoff}")
        if self.beta < 0:
            raise ValueError(f"beta must be >= 0, got {self.beta}")
        if isinstance(self.rescue_distance, bool) or not 0 <= self.rescue_distance <= 10:
            raise ValueError(f"rescue_distance must be a number of body heights in [0, 10], got {self.rescue_distance}")
        if self.speed_unit not in ("body", "px"):
            raise ValueError(f"speed_unit must be body or px, got {self.speed_unit!r}")

    @classmethod
    def from_dict(cls, d: dict | None) -> "TrackerConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return from_section(cls, d, "tracker option")


@dataclass(eq=False)
class _Track:
    """One tracked person. Observations are raw detections (K, 3) float64; times in seconds."""

    obs: np.ndarray
    t: float
    filter: Callable
    hits: int = 1
    id: int = -1                      # -1 while tentative
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # body velocity, px/s
    height: float = 0.0               # smoothed body height (px): the unit of the smoothing's speed

    def predicted(self, t: float, use_velocity: bool) -> np.ndarray:
        if not use_velocity:
            return self.obs
        p = self.obs.copy()
        p[:, :2] += self.velocity * (t - self.t)
        return p

    def observe(self, kps: np.ndarray, t: float) -> None:
        dt = t - self.t
        both = (kps[:, 2] > 0) & (self.obs[:, 2] > 0)
        if dt > 0 and both.any():
            self.velocity = (kps[both, :2] - self.obs[both, :2]).mean(axis=0) / dt
        self.obs, self.t = kps, t
        self.hits += 1


class Tracker:
    """Multi-person tracker: OKS + Hungarian association, time-based aging, One Euro smoothing.

    Args:
        config: settings (:class:`TrackerConfig`; default values when None).
        sigmas: (K,) OKS sigmas of the skeleton (``Skeleton.sigmas``).
        distance: ``distance(track_poses (Nt, K, 3), detections (Nd, K, 3)) -> (Nt, Nd)`` in [0, 1];
            default ``1 - OKS`` with ``sigmas``.
        make_filter: ``make_filter() -> f`` with ``f(values (K, 2), t_seconds, valid (K, 1)) -> (K, 2)``,
            one per track; default a :class:`OneEuroFilter` with the config's parameters. With
            ``speed_unit: body`` the default filter is also given ``scale=`` (the person's body
            height); an injected filter is called with the three arguments only.
    """

    def __init__(self, config: TrackerConfig | None = None, sigmas=None, distance: Callable | None = None,
                 make_filter: Callable | None = None, skeleton=None) -> None:
        self.config = config or TrackerConfig()
        self.sigmas = np.asarray(get_skeleton("coco17").sigmas if sigmas is None else sigmas, np.float64)
        c = self.config
        self.distance = distance or partial(oks_distance, sigmas=self.sigmas * c.sigma_scale)
        self.make_filter = make_filter or partial(OneEuroFilter, c.min_cutoff, c.beta, c.d_cutoff)
        self.skeleton = skeleton or {17: get_skeleton("coco17"), 16: get_skeleton("mpii16")}.get(len(self.sigmas))
        # the speed in body heights needs a skeleton to measure bodies with (else px, as configured or not)
        self._scaled = make_filter is None and c.speed_unit == "body" and self.skeleton is not None
        self._next_id = 0
        self._t0_ns: int | None = None
        self._tracks: list[_Track] = []

    def reset(self) -> None:
        """Drop every track (new stream epoch). The id counter continues: old ids are never reused."""
        self._tracks = []

    @property
    def tracks(self) -> list[_Track]:
        """Live tracks (tentative ones included); read-only use."""
        return list(self._tracks)

    def _rescue(self, kps: np.ndarray, det_track: list, t: float) -> None:
        """Second stage: leftover tracks and detections matched by centre distance in body heights."""
        taken = {id(tr) for tr in det_track if tr is not None}
        tracks = [tr for tr in self._tracks if id(tr) not in taken and tr.t < t]
        dets = [i for i, tr in enumerate(det_track) if tr is None]
        if not tracks or not dets:
            return
        sk = self.skeleton
        th = body_height(np.stack([tr.obs for tr in tracks]), sk) if sk is not None else None
        dh = body_height(kps[dets], sk) if sk is not None else None

        def centre(p):
            f = p[:, 2] > 0
            return p[f, :2].mean(0) if f.any() else None

        pairs = []
        for a, tr in enumerate(tracks):
            ct = centre(tr.predicted(t, self.config.predict))
            for b, i in enumerate(dets):
                cd = centre(kps[i])
                if ct is None or cd is None:
                    continue
                h_t = th[a] if th is not None else 0.0
                h_d = dh[b] if dh is not None else 0.0
                if not (h_t > 0 and h_d > 0) or max(h_t, h_d) > 1.5 * min(h_t, h_d):
                    continue
                d = float(np.hypot(*(ct - cd))) / max(h_t, h_d)
                if d <= self.config.rescue_distance:
                    pairs.append((d, a, b))
        used_t, used_d = set(), set()
        for d, a, b in sorted(pairs):
            if a in used_t or b in used_d:
                continue
            used_t.add(a)
            used_d.add(b)
            det_track[dets[b]] = tracks[a]
            tracks[a].observe(kps[dets[b]], t)

    def update(self, keypoints: np.ndarray, scores: np.ndarray, t_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Associate one frame's people with the tracks and smooth their keypoints.

        Args:
            keypoints: (N, K, 3) x, y, score in pixels (score 0: keypoint not found).
            scores: (N,) person scores (kept for the API; association uses the keypoints).
            t_ns: capture timestamp in ns.

        Returns:
            track_ids (N,) int64 in detection order (-1 for tentative tracks) and
            smoothed keypoints (N, K, 3) float32 (scores unchanged).
        """
        kps = np.asarray(keypoints, dtype=np.float64)
        k = self.sigmas.shape[0]
        if kps.ndim != 3 or kps.shape[1:] != (k, 3):
            raise ValueError(f"keypoints must be (N, {k}, 3), got {kps.shape}")
        if np.shape(scores) != (kps.shape[0],):
            raise ValueError(f"scores must be ({kps.shape[0]},), got {np.shape(scores)}")
        if self._t0_ns is None:
            self._t0_ns = int(t_ns)
        t = (int(t_ns) - self._t0_ns) * 1e-9  # relative seconds keep float64 precise
        cfg = self.config

        self._tracks = [tr for tr in self._tracks if t - tr.t <= cfg.max_age_s]
        n, nt = kps.shape[0], len(self._tracks)
        det_track: list[_Track | None] = [None] * n
        if n and nt:
            pred = np.stack([tr.predicted(t, cfg.predict) for tr in self._tracks])
            dist = np.asarray(self.distance(pred, kps), dtype=np.float64)
            feasible = dist <= 1.0 - cfg.min_oks
            rows, cols = linear_sum_assignment(np.where(feasible, dist, _INFEASIBLE))
            for r, c_ in zip(rows, cols):
                if feasible[r, c_]:
                    det_track[c_] = self._tracks[r]
                    self._tracks[r].observe(kps[c_], t)

        if cfg.rescue_distance > 0 and n and nt:
            self._rescue(kps, det_track, t)
        matched = {id(tr) for tr in det_track if tr is not None}
        # a tentative track that misses an update dies: a flicker never becomes a person
        self._tracks = [tr for tr in self._tracks if tr.id >= 0 or id(tr) in matched]
        for i in range(n):
            if det_track[i] is None:
                tr = _Track(obs=kps[i].copy(), t=t, filter=self.make_filter())
                self._tracks.append(tr)
                det_track[i] = tr

        ids = np.full(n, -1, np.int64)
        out = kps.copy()
        heights = body_height(kps, self.skeleton) if (self._scaled and cfg.smoothing and n) else None
        for i, tr in enumerate(det_track):
            if tr.id < 0 and tr.hits >= cfg.min_hits:
                tr.id = self._next_id
                self._next_id += 1
            ids[i] = tr.id
            if cfg.smoothing:
                if heights is not None:
                    if heights[i] > 0:  # a smoothed scale: one frame's limb estimate is noisy
                        tr.height = heights[i] if tr.height <= 0 else 0.8 * tr.height + 0.2 * heights[i]
                    out[i, :, :2] = tr.filter(kps[i, :, :2], t, kps[i, :, 2:3] > 0, scale=tr.height or None)
                else:
                    out[i, :, :2] = tr.filter(kps[i, :, :2], t, kps[i, :, 2:3] > 0)
        return ids, out.astype(np.float32)


class TrackStage:
    """Pipeline stage: one :class:`Tracker` per source; the runner calls ``reset(source_id)`` when
    that source starts a new epoch and ``end(source_id)`` at its end of stream.

    Fills ``frame.people.track_ids`` and replaces ``frame.people.keypoints`` by the smoothed ones.
    Frames without people (``people is None``) pass through untouched. A frame with zero people
    does update its tracker, so tracks age. The OKS sigmas are those of the model's skeleton
    (``open(meta)`` with ``meta["model"]["skeleton"]``), else of ``skeleton_name``.

    Args:
        config: tracker settings, shared by every source's tracker.
        skeleton_name: skeleton whose OKS sigmas the trackers use when the metadata names none.
    """

    name = "track"

    def __init__(self, config: TrackerConfig | None = None, skeleton_name: str = "coco17") -> None:
        self.config = config or TrackerConfig()
        self.skeleton = get_skeleton(skeleton_name)
        self._trackers: dict[int, Tracker] = {}

    def open(self, meta: dict | None = None) -> None:
        model = (meta or {}).get("model") or {}
        if model.get("skeleton"):
            self.skeleton = get_skeleton(model["skeleton"])
        self._trackers = {}

    def _tracker(self, source_id: int) -> Tracker:
        tracker = self._trackers.get(source_id)
        if tracker is None:
            tracker = self._trackers[source_id] = Tracker(self.config, self.skeleton.sigmas, skeleton=self.skeleton)
        return tracker

    def process(self, frame: Frame) -> Frame:
        if frame.eos or frame.people is None:
            return frame
        people = frame.people
        ids, smoothed = self._tracker(frame.source_id).update(people.keypoints, people.scores, frame.t_capture_ns)
        people.track_ids = ids
        people.keypoints = smoothed
        return frame

    def reset(self, source_id: int) -> None:
        """That source started a new epoch: drop its tracks (its ids continue, see the module docstring)."""
        tracker = self._trackers.get(source_id)
        if tracker is not None:
            LOG.debug("source %d: new epoch, tracker reset", source_id)
            tracker.reset()

    def end(self, source_id: int) -> None:
        tracker = self._trackers.get(source_id)
        if tracker is not None:
            tracker.reset()

    def close(self) -> None:
        self._trackers = {}
