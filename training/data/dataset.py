"""The training dataset: source images -> augmented, normalised tensors + encoded targets.

Targets are rendered with the encoder in ``models/fields`` at every distinct stride of the model's
``stage_strides``, so a multi-scale network gets one target set per scale. Everything the model
dictates (stride(s), normalisation, skeleton, background channel, PAFs) is read from its
``meta()``, never repeated here.

Randomness: item ``i`` in epoch ``e`` draws from ``numpy.random.default_rng([seed, e, i])``. The
same (seed, epoch, index) always gives the same sample, whichever worker renders it; other epochs
and other indices give other samples. The epoch lives in shared memory, so :meth:`set_epoch`
reaches DataLoader workers also when they are persistent.
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, RandomSampler

from posestream.models.fields.encoder import encode_heatmaps, encode_mask, encode_pafs
from posestream.models.skeleton import get_skeleton

from .augment import AffineRecord, AugmentConfig, eval_affine, random_affine

__all__ = ["PoseTrainDataset", "loader_throughput"]

LOG = logging.getLogger(__name__)

_REQUIRED_META = ("stride", "mean", "std", "skeleton", "background", "with_pafs")


class PoseTrainDataset(Dataset):
    """Augmented images and their heatmap / PAF / mask targets for one model.

    Args:
        source: keypoint source: ``len()`` and ``__getitem__`` giving the dicts of
            :class:`~training.data.coco.CocoKeypoints` (``image``, ``keypoints``, ``ignore``, ``image_id``).
        model_meta: the model's ``meta()``: ``stride``, ``stage_strides`` (empty or missing: ``stride``),
            ``mean``, ``std``, ``skeleton``, ``background``, ``with_pafs``.
        augment: augmentation settings; ``augment.input_size`` is the square input side S.
        sigma: heatmap Gaussian standard deviation in grid cells.
        paf_width: PAF half-width in grid cells.
        train: random augmentation (True) or the deterministic fit-and-pad path (False).
        seed: base seed of the augmentation.

    Raises:
        KeyError: ``model_meta`` lacks a required key.
        ValueError: S is not a multiple of every stride, or the source's skeleton differs from the model's.
    """

    def __init__(self, source, model_meta: dict, augment: AugmentConfig, sigma: float = 2.0,
                 paf_width: float = 1.0, train: bool = True, seed: int = 0) -> None:
        missing = [k for k in _REQUIRED_META if k not in model_meta]
        if missing:
            raise KeyError(f"model meta lacks {', '.join(repr(k) for k in missing)}")
        self.source = source
        self.augment = augment
        self.sigma = float(sigma)
        self.paf_width = float(paf_width)
        self.train = bool(train)
        self.seed = int(seed)
        self.skeleton = get_skeleton(model_meta["skeleton"])
        source_skeleton = getattr(source, "skeleton", None)
        if source_skeleton is not None and source_skeleton.name != self.skeleton.name:
            raise ValueError(f"source skeleton {source_skeleton.name!r} differs from the model's {self.skeleton.name!r}")
        self.background = bool(model_meta["background"])
        self.with_pafs = bool(model_meta["with_pafs"])
        strides = [int(s) for s in (model_meta.get("stage_strides") or [model_meta["stride"]])]
        self.strides: tuple[int, ...] = tuple(sorted(set(strides)))
        size = augment.input_size
        bad = [s for s in self.strides if size % s]
        if bad:
            raise ValueError(f"input_size {size} is not a multiple of stride(s) {bad}")
        self.mean = np.asarray(model_meta["mean"], dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(model_meta["std"], dtype=np.float32).reshape(1, 1, 3)
        if np.any(self.std <= 0):
            raise ValueError(f"model meta std must be positive, got {model_meta['std']}")
        mean_rgb = np.clip(np.round(self.mean.reshape(3) * 255), 0, 255).astype(int)
        self.fill = tuple(int(v) for v in mean_rgb) if augment.pad_with_mean else (0, 0, 0)
        # shared memory: written by set_epoch in the main process, read by (persistent) workers
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()

    @property
    def epoch(self) -> int:
        return int(self._epoch.item())

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose augmentation draws the next items use."""
        if epoch < 0:
            raise ValueError(f"epoch must be >= 0, got {epoch}")
        self._epoch.fill_(int(epoch))

    def __len__(self) -> int:
        return len(self.source)

    def sample(self, index: int) -> tuple[dict, AffineRecord]:
        """The augmented numpy sample of item ``index`` and the record of its warp.

        Returns:
            ``(sample, record)``: ``sample`` has ``image`` (S, S, 3) uint8 RGB, ``keypoints`` (N, K, 3)
            float32 in input pixels, ``ignore`` (S, S) bool and the source's other keys.
        """
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for {n} items")
        index %= n
        raw = self.source[index]
        if self.train:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            return random_affine(raw, self.augment, rng, self.skeleton, self.fill)
        return eval_affine(raw, self.augment, self.skeleton, self.fill)

    def targets(self, keypoints: np.ndarray, ignore: np.ndarray | None) -> dict[str, dict[str, np.ndarray]]:
        """Targets of one augmented sample, keyed ``f"s{stride}"``.

        Args:
            keypoints: (N, K, 3) float32 in input pixels.
            ignore: (S, S) bool or None.

        Returns:
            per stride: ``heatmaps`` (K [+1], S/s, S/s), ``pafs`` (2L, S/s, S/s) when the model has PAFs,
            ``mask`` (S/s, S/s); all float32.
        """
        size = (self.augment.input_size, self.augment.input_size)
        out = {}
        for s in self.strides:
            hm = encode_heatmaps(keypoints, size, s, self.sigma, self.skeleton)
            t = {"heatmaps": hm if self.background else hm[:-1]}
            if self.with_pafs:
                t["pafs"] = encode_pafs(keypoints, size, s, self.paf_width, self.skeleton)
            t["mask"] = encode_mask(ignore, size, s)
            out[f"s{s}"] = t
        return out

    def __getitem__(self, index: int) -> dict:
        """One training item.

        Returns:
            dict: ``image`` (3, S, S) float32, ``(rgb / 255 - mean) / std``; ``targets`` as
            :meth:`targets` but torch tensors; ``image_id`` () int64.
        """
        sample, _ = self.sample(index)
        image = (sample["image"].astype(np.float32) * np.float32(1 / 255) - self.mean) / self.std
        targets = {key: {name: torch.from_numpy(np.ascontiguousarray(a)) for name, a in t.items()}
                   for key, t in self.targets(sample["keypoints"], sample.get("ignore")).items()}
        return {"image": torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1))),
                "targets": targets,
                "image_id": torch.tensor(int(sample["image_id"]), dtype=torch.int64)}


def loader_throughput(dataset: Dataset, batch_size: int, num_workers: int, n_batches: int, warmup: int = 2,
                      seed: int = 0) -> float:
    """Images per second a DataLoader delivers from ``dataset`` (random items, with replacement).

    The first ``warmup`` batches (worker start-up, first reads) are not timed.

    Returns:
        images per second over ``n_batches`` batches.
    """
    if n_batches <= 0 or batch_size <= 0:
        raise ValueError("n_batches and batch_size must be positive")
    sampler = RandomSampler(dataset, replacement=True, num_samples=(n_batches + warmup) * batch_size,
                            generator=torch.Generator().manual_seed(seed))
    # no cv2.setNumThreads(1) in a worker_init_fn: in a forked worker whose parent already ran
    # OpenCV's thread pool, that call waits forever for pool threads that were not forked
    loader = DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=num_workers)
    it = iter(loader)
    for _ in range(warmup):
        next(it)
    t0 = time.perf_counter()
    for _ in range(n_batches):
        next(it)
    dt = time.perf_counter() - t0
    del it
    rate = n_batches * batch_size / dt
    LOG.info("loader: %.1f images/s (batch %d, %d workers, %d batches)", rate, batch_size, num_workers, n_batches)
    return rate
