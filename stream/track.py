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
little. Its rate comes from the timestamps of successive calls (in the pipeline: a file's media time, a
live source's capture time; :func:`frame_time_ns`), never from a nominal
frame rate, so dropped frames and irregular sources are handled (MediaPipe's
``one_euro_filter.cc`` does the same).

Rules (the choices this module makes):

- **Births.** An unmatched detection whose person score is at least ``confirm_score`` is a person
  at once: its track is confirmed and takes an id on its first frame (no ``-1`` for a person the
  user sees). A less confident one starts a *tentative* track, reported with id ``TENTATIVE``
  (-2; the renderer does not draw it) until it has been matched ``min_hits`` times (the first
  detection counts); it dies at the first update in which it is not matched, so a flicker of
  weak false positives never gets an id. Ids come from the tracker's counter at confirmation,
  so tentative tracks that died leave no gaps. ``-1`` (``UNTRACKED``) is what people carry when
  no tracker ran.
- **Association in stages** (ByteTrack's idea, with OKS for IoU): detections with a person score
  >= ``high_score`` are matched to the tracks first; the weaker ones then compete for the tracks
  left over, so a weak detection (a person half hidden or turning) keeps its track instead of
  starting a new one but never steals a track from a confident detection. What both OKS stages
  leave goes to a third stage by centre distance in body heights (``rescue_distance``), whose
  gate widens by ``reid_speed`` body heights per second for a track lost for a while, so a
  person hidden for less than ``max_age_s`` is re-identified by its predicted place.
- **OKS on the keypoints seen.** Keypoints with score <= ``min_keypoint_score`` (the decoder
  fills missing ones with weak guesses) take no part in association; the OKS scale is the
  track's body height (``oks_area: height``), not the box of the keypoints seen (which shrinks
  when few are seen), and a pair sharing fewer than ``min_shared`` seen keypoints is left to the
  centre stage.
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
- **Smoothing in the person's own scale** (``smoother: centred``, :class:`PoseSmoother`): a
  pose is its body centre plus each keypoint's offset from it. The centre (the mean of the
  keypoints seen, carried from frame to frame by their mean displacement) is smoothed by a
  constant-velocity Kalman filter whose noises are in body heights, so a walking person's
  skeleton has no lag at constant speed and a manoeuvre (an innovation beyond ``manoeuvre_gate``
  sigmas) releases the velocity at once. The offsets (the limbs' own motion) are One Euro
  filtered with the speed term in body heights per second (``speed_unit: body``; the height from
  the seen limbs, smoothed per track), so a 60-px pedestrian and a 600-px person at the camera
  are smoothed alike. ``smoother: one_euro`` is the plain per-keypoint One Euro filter on
  positions (the ablation in ``posestream bench tracking --ablate``).
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

from posestream.models.skeleton import body_height, get_skeleton
from posestream.stream.messages import Frame, now_ns
from posestream.models.config import from_section
from posestream.models.oks import oks_distance, oks_matrix

__all__ = ["OneEuroFilter", "PoseSmoother", "oks_matrix", "oks_distance", "TrackerConfig", "Tracker", "TrackStage",
           "TENTATIVE", "UNTRACKED"]

LOG = logging.getLogger(__name__)

# Hungarian cost of a pair below min_oks: larger than any sum of feasible costs (each <= 1) for the
# sizes a frame has, so the assignment maximises the number of feasible pairs first.
_INFEASIBLE = 1e6
# Hungarian cost added to a new track's pairs, falling to 0 at 30 matches
_SENIORITY = 0.1
# track ids that are not ids: a person no tracker has seen, a person whose track is tentative
UNTRACKED = -1
TENTATIVE = -2
# OKS scale s² of a pose from its body height: a standing person's keypoint box is about 0.3 h wide
_AREA_PER_HEIGHT2 = 0.3


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


class PoseSmoother:
    """A person's pose smoothed as body centre + offsets, in the person's own scale.

    The centre is the mean of the keypoints seen (score > ``min_score``), carried from frame to
    frame by their mean displacement (so a keypoint appearing or vanishing does not move it), and
    is smoothed by a constant-velocity Kalman filter per axis: measurement noise ``centre_noise``
    body heights, white-noise acceleration ``centre_accel`` body heights / s² per √Hz. At constant
    velocity such a filter has no lag; an innovation beyond ``manoeuvre_gate`` sigmas (a person
    stopping or turning back) releases the velocity's certainty so the centre follows at once.
    The offsets of the keypoints from the centre (the limbs' own motion) go through a
    :class:`OneEuroFilter` whose speed term is in body heights / s.

    Call ``smoother(keypoints (K, 3), t_seconds, height_px) -> (K, 2)``; keypoints with score 0
    pass through raw (as in :class:`OneEuroFilter`).
    """

    def __init__(self, min_cutoff: float = 0.3, beta: float = 1.0, d_cutoff: float = 0.3,
                 centre_noise: float = 0.02, centre_accel: float = 0.5, manoeuvre_gate: float = 4.0,
                 min_score: float = 0.1) -> None:
        if centre_noise <= 0 or centre_accel <= 0:
            raise ValueError(f"centre_noise and centre_accel must be > 0, got {centre_noise}, {centre_accel}")
        self.offsets = OneEuroFilter(min_cutoff, beta, d_cutoff)
        self.r, self.q, self.gate, self.min_score = float(centre_noise), float(centre_accel), float(manoeuvre_gate), float(min_score)
        self.reset()

    def reset(self) -> None:
        self.offsets.reset()
        self._c = self._prev = self._x = self._p = self._t = self._out = None

    def _centre(self, kps: np.ndarray) -> tuple[np.ndarray | None, bool]:
        """(raw centre, continued: False when it had to start again)."""
        seen = kps[:, 2] > self.min_score
        if not seen.any():
            seen = kps[:, 2] > 0
        if not seen.any():
            return None, False
        if self._c is not None:
            both = seen & (self._prev[:, 2] > self.min_score)
            if both.any():
                return self._c + (kps[both, :2] - self._prev[both, :2]).mean(axis=0), True
        return kps[seen, :2].mean(axis=0), False

    def _kalman(self, z: np.ndarray, t: float, h: float) -> np.ndarray:
        r2 = (self.r * h) ** 2
        if self._x is None:
            self._x = np.stack([z, np.zeros(2)], axis=1)          # (axis, [position, velocity])
            self._p = np.tile(np.diag([r2, h * h]), (2, 1, 1))    # velocity unknown: ~1 height/s
            self._t = t
            return z.copy()
        dt = t - self._t
        self._t = t
        f = np.array([[1.0, dt], [0.0, 1.0]])
        qd = (self.q * h) ** 2 * np.array([[dt ** 3 / 3, dt ** 2 / 2], [dt ** 2 / 2, dt]])
        for a in range(2):
            x = f @ self._x[a]
            p = f @ self._p[a] @ f.T + qd
            nu = z[a] - x[0]
            s = p[0, 0] + r2
            if self.gate and nu * nu > self.gate ** 2 * s:  # a manoeuvre: the velocity is not known
                p[1, 1] += (nu / dt) ** 2
                s = p[0, 0] + r2
            k = p[:, 0] / s
            self._x[a] = x + k * nu
            self._p[a] = p - np.outer(k, p[0])
        return self._x[:, 0].copy()

    def __call__(self, keypoints: np.ndarray, t: float, height: float) -> np.ndarray:
        kps = np.asarray(keypoints, np.float64)
        if self._t is not None and t <= self._t and self._out is not None:
            return self._out.copy()     # repeated or out-of-order timestamp: the last output
        c, continued = self._centre(kps)
        if c is None:
            return kps[:, :2].copy()
        if not continued and self._c is not None:
            self.reset()                # nothing in common with the last pose: start again
        h = float(height) if height and height > 0 else max(float(np.ptp(kps[kps[:, 2] > 0, 1])), 1.0)
        self._c, self._prev = c, kps.copy()
        centre = self._kalman(c, t, h)
        off = self.offsets(kps[:, :2] - c, t, kps[:, 2:3] > 0, scale=h)
        out = np.where(kps[:, 2:3] > 0, centre + off, kps[:, :2])
        self._out = out
        return out.copy()


@dataclass(frozen=True)
class TrackerConfig:
    """Tracker settings.

    Attributes:
        min_oks: a detection matches a track only if distance <= 1 - min_oks (with the default
            OKS distance: OKS >= min_oks).
        max_age_s: a confirmed track unmatched for longer than this (capture seconds) dies. 2 s:
            a pedestrian hidden in a group for a second or two keeps their id (``reid_speed``
            widens the search while they are away).
        min_hits: matches (the first detection included) before a track is confirmed and gets an id.
        sigma_scale: the OKS sigmas are multiplied by this for association. COCO's sigmas measure
            how well annotators agree on a still image; between frames a small person's keypoints
            move and jitter by more than that (a 50-px-tall pedestrian: nose tolerance ~1.6 px), so
            with the raw sigmas tracks of small people break every few frames.
        predict: predict each track's pose with constant velocity before matching.
        smoothing: smooth the keypoints (off: the raw keypoints come back).
        smoother: ``centred`` (:class:`PoseSmoother`: body centre by a constant-velocity Kalman
            filter, offsets by One Euro) or ``one_euro`` (One Euro on each keypoint's position).
        min_cutoff: One Euro cutoff at zero speed, Hz (of the offsets with ``centred``).
        beta: One Euro speed coefficient: per (body heights / s) with ``speed_unit: body`` (the
            speed is px/s over the person's body height,
            :func:`posestream.models.skeleton.body_height`), per (px / s) with ``px``.
        speed_unit: ``body`` (scale-free: a small far pedestrian and a large near person are
            smoothed alike) or ``px``.
        d_cutoff: One Euro cutoff of the speed estimate, Hz.
        centre_noise: ``centred``: the centre's measurement noise, body heights.
        centre_accel: ``centred``: the centre's random acceleration, body heights / s² per √Hz
            (higher follows changes of speed faster, smooths less).
        manoeuvre_gate: ``centred``: an innovation beyond this many sigmas is a change of motion
            and releases the velocity (0: never).
        min_keypoint_score: keypoints with a score at or below this are not "seen": they take no
            part in association, velocity, body height or the smoothing's centre (the decoder
            fills missing keypoints with weak guesses). The renderer's default threshold.
        high_score: person score that splits the two OKS stages (ByteTrack): confident
            detections are matched first, then the weak ones to the tracks left (0: one stage).
        confirm_score: a new person at least this confident is confirmed (gets an id) on its first
            frame; weaker ones need ``min_hits`` (above 1: every birth needs them).
        oks_area: the OKS scale of a track: ``height`` (0.3 × its body height², steady when few
            keypoints are seen) or ``box`` (the box of its keypoints seen, COCO's choice).
        min_shared: a track and a detection sharing fewer seen keypoints than this are not
            compared by OKS (a one- or two-keypoint OKS is noise); the centre stage may match them.
        reid_speed: the centre stage's gate grows by this many body heights per second a track has
            been lost, so a person hidden for a while (< ``max_age_s``) is re-identified where its
            prediction says; 0: only tracks seen at the previous update take part in that stage.
        duplicate_oks: a detection whose OKS (COCO's sigmas, on the keypoints seen) with a more
            confident one of the same frame is at least this is a duplicate of that person (the
            grouping sometimes splits one body into two overlapping poses): it starts no track
            and is reported ``TENTATIVE`` (1: never), unless it matches a confirmed track that
            nothing else took (two people crossing). Two people side by side score ~0.
        birth_score: a detection weaker than this never starts a track; it may only continue one
            (ByteTrack's rule: the faint ghosts of signs and reflections get no id).
        rescue_distance: a second association stage for what the OKS stage left: an unmatched
            track and an unmatched detection whose centres are within this many body heights (1)
            (and whose heights agree within a factor 1.5) are matched, closest first. It catches
            what OKS cannot: a person moving faster than the prediction knows (a newborn track
            has no velocity yet: at 30 % of their height per frame OKS is ~0). 0 disables it.
    """

    min_oks: float = 0.3
    max_age_s: float = 2.0
    min_hits: int = 3
    sigma_scale: float = 2.0
    predict: bool = True
    smoothing: bool = True
    smoother: str = "centred"
    min_cutoff: float = 0.3
    beta: float = 1.0
    d_cutoff: float = 0.3
    speed_unit: str = "body"
    centre_noise: float = 0.02
    centre_accel: float = 0.5
    manoeuvre_gate: float = 4.0
    rescue_distance: float = 1.0
    min_keypoint_score: float = 0.1
    high_score: float = 0.3
    confirm_score: float = 0.45
    oks_area: str = "height"
    min_shared: int = 3
    reid_speed: float = 1.0
    duplicate_oks: float = 0.5
    birth_score: float = 0.1

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
        if self.smoother not in ("centred", "one_euro"):
            raise ValueError(f"smoother must be centred or one_euro, got {self.smoother!r}")
        if self.oks_area not in ("height", "box"):
            raise ValueError(f"oks_area must be height or box, got {self.oks_area!r}")
        if self.centre_noise <= 0 or self.centre_accel <= 0 or self.manoeuvre_gate < 0:
            raise ValueError(f"centre_noise and centre_accel must be > 0 and manoeuvre_gate >= 0, got "
                             f"{self.centre_noise}, {self.centre_accel}, {self.manoeuvre_gate}")
        for name in ("min_keypoint_score", "high_score", "duplicate_oks", "birth_score"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}")
        if self.confirm_score < 0:
            raise ValueError(f"confirm_score must be >= 0, got {self.confirm_score}")
        if int(self.min_shared) != self.min_shared or self.min_shared < 1:
            raise ValueError(f"min_shared must be an integer >= 1, got {self.min_shared}")
        if self.reid_speed < 0:
            raise ValueError(f"reid_speed must be >= 0 body heights / s, got {self.reid_speed}")

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
    id: int = TENTATIVE
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2))  # body velocity, px/s
    height: float = 0.0               # smoothed body height (px): the scale of OKS and smoothing
    min_score: float = 0.0            # keypoints at or below are not seen

    def seen(self) -> np.ndarray:
        return self.obs[:, 2] > self.min_score

    def predicted(self, t: float, use_velocity: bool) -> np.ndarray:
        if not use_velocity:
            return self.obs
        p = self.obs.copy()
        p[:, :2] += self.velocity * (t - self.t)
        return p

    def observe(self, kps: np.ndarray, t: float) -> None:
        dt = t - self.t
        both = (kps[:, 2] > self.min_score) & self.seen()
        if dt > 0 and both.any():
            v = (kps[both, :2] - self.obs[both, :2]).mean(axis=0) / dt
            # the first velocity as measured; then half old, half new: one bad match does not fling the prediction
            self.velocity = v if self.hits == 1 else 0.5 * (self.velocity + v)
        self.obs, self.t = kps, t
        self.hits += 1


class Tracker:
    """Multi-person tracker: staged OKS + Hungarian association, time-based aging, smoothing.

    Args:
        config: settings (:class:`TrackerConfig`; default values when None).
        sigmas: (K,) OKS sigmas of the skeleton (``Skeleton.sigmas``).
        distance: ``distance(track_poses (Nt, K, 3), detections (Nd, K, 3)) -> (Nt, Nd)`` in [0, 1];
            default ``1 - OKS`` with ``sigmas`` on the keypoints seen, scaled by the tracks' body
            heights (``oks_area``), ``min_shared`` keypoints in common.
        make_filter: ``make_filter() -> f`` with ``f(values (K, 2), t_seconds, valid (K, 1)) -> (K, 2)``,
            one per track, applied to the keypoints' positions; default the config's smoother
            (:class:`PoseSmoother` or, with ``smoother: one_euro``, a :class:`OneEuroFilter`, given
            ``scale=`` the person's body height with ``speed_unit: body``).
    """

    def __init__(self, config: TrackerConfig | None = None, sigmas=None, distance: Callable | None = None,
                 make_filter: Callable | None = None, skeleton=None) -> None:
        self.config = config or TrackerConfig()
        self.sigmas = np.asarray(get_skeleton("coco17").sigmas if sigmas is None else sigmas, np.float64)
        c = self.config
        self._custom_distance = distance
        self.distance = distance or self._oks_distance
        self._custom_filter = make_filter is not None
        if make_filter is not None:
            self.make_filter = make_filter
        elif c.smoother == "centred":
            self.make_filter = partial(PoseSmoother, c.min_cutoff, c.beta, c.d_cutoff, c.centre_noise,
                                       c.centre_accel, c.manoeuvre_gate, c.min_keypoint_score)
        else:
            self.make_filter = partial(OneEuroFilter, c.min_cutoff, c.beta, c.d_cutoff)
        self.skeleton = skeleton or {17: get_skeleton("coco17"), 16: get_skeleton("mpii16")}.get(len(self.sigmas))
        # the speed in body heights needs a skeleton to measure bodies with (else px, as configured or not)
        self._scaled = not self._custom_filter and c.speed_unit == "body" and self.skeleton is not None
        self._next_id = 0
        self._t0_ns: int | None = None
        self._t_prev: float | None = None
        self._tracks: list[_Track] = []
        self._pred_heights = np.zeros(0)

    def reset(self) -> None:
        """Drop every track (new stream epoch). The id counter continues: old ids are never reused."""
        self._tracks = []
        self._t_prev = None

    @property
    def tracks(self) -> list[_Track]:
        """Live tracks (tentative ones included); read-only use."""
        return list(self._tracks)

    def _seen(self, kps: np.ndarray) -> np.ndarray:
        """Keypoints with score <= min_keypoint_score get score 0 (a copy)."""
        out = kps.copy()
        out[..., 2] = np.where(kps[..., 2] > self.config.min_keypoint_score, kps[..., 2], 0.0)
        return out

    def _heights(self, kps: np.ndarray) -> np.ndarray:
        if self.skeleton is None or not len(kps):
            return np.zeros(len(kps))
        return body_height(self._seen(kps), self.skeleton).astype(np.float64)

    def _oks_distance(self, pred: np.ndarray, kps: np.ndarray) -> np.ndarray:
        """1 - OKS on the keypoints seen; the tracks' body heights as the scale (``oks_area``)."""
        c = self.config
        a, b = self._seen(pred), self._seen(kps)
        areas = None
        if c.oks_area == "height" and len(self._pred_heights) == len(a):
            h = self._pred_heights
            if (h > 0).all():
                areas = _AREA_PER_HEIGHT2 * h * h
        sim = oks_matrix(a, b, self.sigmas * c.sigma_scale, areas)
        shared = ((a[:, None, :, 2] > 0) & (b[None, :, :, 2] > 0)).sum(-1)
        return np.where(shared >= c.min_shared, 1.0 - sim, 1.0)

    def _match(self, kps: np.ndarray, dets: list[int], det_track: list, t: float) -> None:
        """OKS + Hungarian between the detections ``dets`` and the tracks not matched yet."""
        taken = {id(tr) for tr in det_track if tr is not None}
        tracks = [tr for tr in self._tracks if id(tr) not in taken]
        if not tracks or not dets:
            return
        if any(tr.id < 0 for tr in tracks) and any(tr.id >= 0 for tr in tracks):
            # confirmed tracks first, then tentative ones for what is left (ByteTrack's order)
            confirmed = [tr for tr in tracks if tr.id >= 0]
            self._match_tracks(kps, dets, det_track, t, confirmed)
            dets = [i for i in dets if det_track[i] is None]
            tracks = [tr for tr in tracks if tr.id < 0]
        self._match_tracks(kps, dets, det_track, t, tracks)

    def _match_tracks(self, kps, dets, det_track, t, tracks) -> None:
        if not tracks or not dets:
            return
        cfg = self.config
        pred = np.stack([tr.predicted(t, cfg.predict) for tr in tracks])
        self._pred_heights = np.array([tr.height for tr in tracks])
        dist = np.asarray(self.distance(pred, kps[dets]), dtype=np.float64)
        feasible = dist <= 1.0 - cfg.min_oks
        # between near-equal matches the track with the longer history wins (a fragment of a
        # person that got a track of its own never takes the person's track from it)
        seniority = _SENIORITY * (1.0 - np.minimum([tr.hits for tr in tracks], 30) / 30.0)[:, None]
        from scipy.optimize import linear_sum_assignment  # here: the supervisor imports this module for its config

        rows, cols = linear_sum_assignment(np.where(feasible, dist + seniority, _INFEASIBLE))
        for r, c_ in zip(rows, cols):
            if feasible[r, c_]:
                det_track[dets[c_]] = tracks[r]
                tracks[r].observe(kps[dets[c_]], t)

    def _duplicates(self, kps: np.ndarray, scores: np.ndarray, h: np.ndarray) -> np.ndarray:
        """(N,) bool: detections that are a second pose of a more confident detection's person."""
        n = len(kps)
        dup = np.zeros(n, bool)
        if n < 2 or self.config.duplicate_oks >= 1.0:
            return dup
        seen = self._seen(kps)
        areas = np.where(h > 0, _AREA_PER_HEIGHT2 * h * h, 0.0)
        sim = oks_matrix(seen, seen, self.sigmas * self.config.sigma_scale, areas)
        sim = np.minimum(sim, sim.T)  # symmetric: each pose's own scale must agree
        for j in np.argsort(-scores, kind="stable"):
            if dup[j]:
                continue
            stronger = (scores > scores[j]) | ((scores == scores[j]) & (np.arange(n) < j))
            if np.any(stronger & ~dup & (sim[:, j] >= self.config.duplicate_oks)):
                dup[j] = True
        return dup

    def _rescue(self, kps: np.ndarray, det_track: list, t: float, dup, heights: np.ndarray) -> None:
        """Last stage: leftover tracks and detections matched by centre distance in body heights,
        the gate widened by ``reid_speed`` for the time a track has been lost."""
        cfg = self.config
        taken = {id(tr) for tr in det_track if tr is not None}
        recent = self._t_prev if self._t_prev is not None else -np.inf
        tracks = [tr for tr in self._tracks if id(tr) not in taken and tr.t < t
                  and (cfg.reid_speed > 0 or tr.t >= recent)]
        dets = [i for i, tr in enumerate(det_track) if tr is None and not dup[i]]
        if not tracks or not dets:
            return
        th = np.array([tr.height for tr in tracks]) if not self._custom_filter else np.zeros(len(tracks))
        th = np.where(th > 0, th, self._heights(np.stack([tr.obs for tr in tracks])))
        dh = heights[dets]

        def centre(p):
            f = p[:, 2] > cfg.min_keypoint_score
            return p[f, :2].mean(0) if f.any() else None

        pairs = []
        for a, tr in enumerate(tracks):
            ct = centre(tr.predicted(t, cfg.predict))
            lost = max(0.0, recent - tr.t) if np.isfinite(recent) else 0.0
            gate = cfg.rescue_distance + cfg.reid_speed * lost
            for b, i in enumerate(dets):
                cd = centre(kps[i])
                if ct is None or cd is None:
                    continue
                h_t, h_d = th[a], dh[b]
                if not (h_t > 0 and h_d > 0) or max(h_t, h_d) > 1.5 * min(h_t, h_d):
                    continue
                d = float(np.hypot(*(ct - cd))) / max(h_t, h_d)
                if d <= gate:
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
            scores: (N,) person scores: they split the association stages and decide births.
            t_ns: capture timestamp in ns.

        Returns:
            track_ids (N,) int64 in detection order (``TENTATIVE`` for tentative tracks) and
            smoothed keypoints (N, K, 3) float32 (scores unchanged).
        """
        kps = np.asarray(keypoints, dtype=np.float64)
        k = self.sigmas.shape[0]
        if kps.ndim != 3 or kps.shape[1:] != (k, 3):
            raise ValueError(f"keypoints must be (N, {k}, 3), got {kps.shape}")
        if np.shape(scores) != (kps.shape[0],):
            raise ValueError(f"scores must be ({kps.shape[0]},), got {np.shape(scores)}")
        scores = np.asarray(scores, np.float64)
        if self._t0_ns is None:
            self._t0_ns = int(t_ns)
        t = (int(t_ns) - self._t0_ns) * 1e-9  # relative seconds keep float64 precise
        cfg = self.config

        self._tracks = [tr for tr in self._tracks if t - tr.t <= cfg.max_age_s]
        n = kps.shape[0]
        det_track: list[_Track | None] = [None] * n
        heights = self._heights(kps)  # (N,) body heights of this frame's people, used by every stage below
        dup = self._duplicates(kps, scores, heights)
        if n and self._tracks:
            strong = [i for i in range(n) if scores[i] >= cfg.high_score and not dup[i]]
            self._match(kps, strong, det_track, t)
            self._match(kps, [i for i in range(n) if scores[i] < cfg.high_score and not dup[i]], det_track, t)
            if cfg.rescue_distance > 0:
                self._rescue(kps, det_track, t, dup, heights)
            # a "duplicate" may be a second person in the same place (a crossing): it keeps a
            # confirmed track that nothing else took and whose pose it matches
            taken = {id(tr) for tr in det_track if tr is not None}
            left = [tr for tr in self._tracks if tr.id >= 0 and id(tr) not in taken]
            self._match_tracks(kps, [i for i in range(n) if dup[i] and det_track[i] is None], det_track, t, left)
        matched = {id(tr) for tr in det_track if tr is not None}
        # a tentative track that misses an update dies: a flicker never becomes a person
        self._tracks = [tr for tr in self._tracks if tr.id >= 0 or id(tr) in matched]
        for i in range(n):
            if det_track[i] is None and not dup[i]:
                if scores[i] < cfg.birth_score:
                    continue    # too weak to be a new person: it may only continue a track (ByteTrack)
                tr = _Track(obs=kps[i].copy(), t=t, filter=self.make_filter(), min_score=cfg.min_keypoint_score)
                if scores[i] >= cfg.confirm_score:
                    tr.hits = max(tr.hits, cfg.min_hits)   # confident: a person from its first frame
                self._tracks.append(tr)
                det_track[i] = tr
        self._t_prev = t

        ids = np.full(n, TENTATIVE, np.int64)
        out = kps.copy()
        for i, tr in enumerate(det_track):
            if tr is None:      # a duplicate or too weak for a birth: reported raw and TENTATIVE
                continue
            if heights[i] > 0:  # a smoothed scale: one frame's limb estimate is noisy
                tr.height = heights[i] if tr.height <= 0 else 0.8 * tr.height + 0.2 * heights[i]
            if tr.id < 0 and tr.hits >= cfg.min_hits:
                tr.id = self._next_id
                self._next_id += 1
            ids[i] = tr.id
            if cfg.smoothing:
                if self._custom_filter:
                    out[i, :, :2] = tr.filter(kps[i, :, :2], t, kps[i, :, 2:3] > 0)
                elif cfg.smoother == "centred":
                    out[i, :, :2] = tr.filter(kps[i], t, tr.height if self._scaled else 0.0)
                elif self._scaled:
                    out[i, :, :2] = tr.filter(kps[i, :, :2], t, kps[i, :, 2:3] > 0, scale=tr.height or None)
                else:
                    out[i, :, :2] = tr.filter(kps[i, :, :2], t, kps[i, :, 2:3] > 0)
        return ids, out.astype(np.float32)


def frame_time_ns(frame: Frame) -> int:
    """The time the tracker's filters see for a frame: a recorded source's (file, image folder)
    media time when it has one, so that a file gives the same tracks however fast it is decoded
    and processed (the capture clock of a file read faster than real time is the decoder's pace,
    bursty behind a lossless pipeline); a live source's capture time."""
    if frame.pts is not None and frame.info.get("kind") in ("file", "images"):
        return int(round(float(frame.pts) * 1e9))
    return frame.t_capture_ns


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
        ids, smoothed = self._tracker(frame.source_id).update(people.keypoints, people.scores, frame_time_ns(frame))
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
