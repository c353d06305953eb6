"""The trainer: one CPU, one GPU (AMP) or many (``torchrun``, DistributedDataParallel).

Everything a run needs to continue exactly where it stopped is in ``OUT/state.pt`` (model,
optimiser, scheduler, AMP scaler, RNG states, step, epoch and position in the epoch), written
every ``train.ckpt_every`` steps; a run started again with the same ``out_dir`` resumes. The data
order is a function of (seed, epoch) and each sample's augmentation of (seed, epoch, index), so a
resumed CPU run reproduces the uninterrupted one bit for bit.

Outputs in ``OUT``: ``state.pt`` (resume), ``last.pt`` and ``best.pt`` (posestream checkpoints
with metadata, recipe and metrics; best by validation AP), ``tb/`` (TensorBoard scalars and images
of predicted vs target fields), ``curves.png`` (loss and AP), ``history.json``.
"""
from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from posestream.models.checkpoint import load_weights_into, save_checkpoint
from posestream.models.registry import build_model

from .config import TrainConfig

LOG = logging.getLogger(__name__)

__all__ = ["Trainer", "build_train_dataset"]


def _dist_info() -> tuple[int, int, int]:
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))


def build_train_dataset(cfg: TrainConfig, meta: dict, train: bool = True):
    from posestream.models.skeleton import get_skeleton

    from .data.augment import AugmentConfig
    from .data.coco import CocoKeypoints, ConcatKeypoints
    from .data.dataset import PoseTrainDataset
    from .data.mpii import MPIIKeypoints

    if not cfg.data.train:
        raise ValueError("data.train is empty: give at least one {ann: ..., images: ...}")
    skeleton = get_skeleton(meta["skeleton"])

    def source(d: dict):
        unknown = set(d) - {"ann", "images", "format"}
        if unknown or "ann" not in d or "images" not in d:
            raise ValueError(f"data.train entries are {{ann, images[, format: coco|mpii]}}, got {sorted(d)}")
        fmt = d.get("format", "coco")
        if fmt == "mpii":
            return MPIIKeypoints(d["ann"], d["images"], skeleton=skeleton)
        if fmt != "coco":
            raise ValueError(f"data.train format {fmt!r}: expected coco or mpii")
        return CocoKeypoints(d["ann"], d["images"], skeleton=skeleton)

    parts = [source(d) for d in cfg.data.train]
    source = parts[0] if len(parts) == 1 else ConcatKeypoints(parts)
    if cfg.data.subset:
        source = _Subset(source, cfg.data.subset)
    aug = AugmentConfig.from_dict({**cfg.data.augment, "input_size": cfg.data.input_size})
    return PoseTrainDataset(source, meta, aug, sigma=cfg.data.sigma, paf_width=cfg.data.paf_width, train=train,
                            seed=cfg.train.seed)


class _Subset:
    """Keep only the samples whose image id is listed (tiny overfitting runs, tests)."""

    def __init__(self, source, image_ids) -> None:
        self.source = source
        wanted = {int(i) for i in image_ids}
        self.index = [i for i, iid in enumerate(source.image_ids()) if int(iid) in wanted]
        if not self.index:
            raise ValueError(f"data.subset: none of the image ids {sorted(wanted)} is in the training data")

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i):
        return self.source[self.index[i]]


class _Positions(torch.utils.data.Sampler):
    """Yields a fixed list of indices (the rest of an epoch)."""

    def __init__(self, indices: list[int]) -> None:
        self.indices = indices

    def __iter__(self):
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)


def _lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def _backbone_lr_factor(step: int, freeze: int, unfreeze_warmup: int, warmup: int, total: int,
                        schedule: str) -> float:
    """The backbone's LR factor: 0 while frozen, then a linear ramp over ``unfreeze_warmup`` steps
    (a backbone without BatchNorm collapses under a sudden AdamW step), times the common schedule."""
    base = _lr_factor(step, warmup, total, schedule)
    if step < freeze:
        return 0.0
    if unfreeze_warmup > 0 and step < freeze + unfreeze_warmup:
        return base * (step - freeze + 1) / unfreeze_warmup
    return base


class Trainer:
    """Trains ``cfg.model`` on ``cfg.data`` with ``cfg.loss`` (see ``configs/``)."""

    def __init__(self, cfg: TrainConfig, progress: bool = True) -> None:
        from .losses import LossConfig, PoseLoss, heatmap_activation

        self.cfg = cfg
        self.rank, self.world, local = _dist_info()
        self.distributed = self.world > 1
        want = cfg.train.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(f"cuda:{local}" if want == "cuda" and self.distributed else want)
        if self.distributed and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
        self.main = self.rank == 0
        self.progress = progress and self.main
        self.out = Path(cfg.train.out_dir)
        if self.main:
            self.out.mkdir(parents=True, exist_ok=True)
        self._seed_everything(cfg.train.seed + self.rank)

        model = build_model(cfg.model.name, **cfg.model.kwargs)
        if cfg.model.pretrained:
            if not hasattr(model, "load_pretrained"):
                raise ValueError(f"model.pretrained: {cfg.model.name} has no external pretrained weights to load")
            loaded = model.load_pretrained(cfg.model.pretrained)
            if self.main:
                LOG.info("pretrained from %s: %s", cfg.model.pretrained, ", ".join(loaded))
        if cfg.model.init:
            load_weights_into(model, cfg.model.init)
        self.model = model.to(self.device)
        self.memory_format = torch.channels_last if cfg.train.channels_last else torch.contiguous_format
        self.model.to(memory_format=self.memory_format)
        self.meta = {**model.meta(), "input_size": cfg.data.input_size}
        self.loss_cfg = LossConfig.from_dict(cfg.loss)
        self.loss_fn = PoseLoss(self.loss_cfg, background=model.background)
        act = heatmap_activation(self.loss_cfg)
        self.activation_name = "sigmoid" if act is torch.sigmoid else "identity"
        self.activation = act
        self.meta["heatmap_activation"] = self.activation_name
        self.dataset = build_train_dataset(cfg, self.meta, train=True)
        self.stage_strides = list(self.meta["stage_strides"])

        self._frozen = tuple(str(f) for f in cfg.optim.frozen)
        names = {n for n, _ in model.named_parameters()}
        for f in self._frozen:
            if not any(n.startswith(f) for n in names):
                raise ValueError(f"optim.frozen: no parameter of {cfg.model.name} starts with {f!r}")
        backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.")]
        rest = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
        o = cfg.optim
        groups = [{"params": rest, "lr": o.lr, "name": "head"}]
        if backbone:
            groups.append({"params": backbone, "lr": o.backbone_lr if o.backbone_lr is not None else o.lr,
                           "name": "backbone"})
        self.optimizer = torch.optim.AdamW(groups, weight_decay=o.weight_decay)
        for g in self.optimizer.param_groups:
            g["initial_lr"] = g["lr"]
        total = cfg.train.max_steps
        factors = [lambda s: _lr_factor(s, o.warmup_steps, total, o.schedule)]
        if backbone:
            factors.append(lambda s: _backbone_lr_factor(s, o.freeze_backbone_steps, o.unfreeze_warmup_steps,
                                                         o.warmup_steps, total, o.schedule))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factors)
        self.amp = bool(cfg.train.amp and self.device.type == "cuda")
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp)
        self.net = self.model
        if self.distributed:
            self.net = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.step, self.epoch, self.pos, self.best = 0, 0, 0, -1.0
        self.history: dict[str, list] = {"step": [], "loss": [], "eval_step": [], "AP": []}
        self.writer = None
        self._resume()

    # -- state ---------------------------------------------------------------------------------

    @staticmethod
    def _seed_everything(seed: int) -> None:
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _rng_state(self) -> dict:
        np_state = np.random.get_state()
        return {"python": [list(x) if isinstance(x, tuple) else x for x in random.getstate()],
                "numpy": {"key": torch.from_numpy(np_state[1].astype(np.int64)), "pos": int(np_state[2]),
                          "has_gauss": int(np_state[3]), "gauss": float(np_state[4])},
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}

    def _set_rng_state(self, s: dict) -> None:
        py = s["python"]
        random.setstate((py[0], tuple(py[1]), py[2]))
        n = s["numpy"]
        np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
        torch.set_rng_state(s["torch"])
        if s["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(s["cuda"])

    def save_state(self) -> None:
        if not self.main:
            return
        state = {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                 "scheduler": self.scheduler.state_dict(), "scaler": self.scaler.state_dict(),
                 "rng": self._rng_state(), "step": self.step, "epoch": self.epoch, "pos": self.pos,
                 "best": self.best, "history": json.dumps(self.history)}
        tmp = self.out / "state.pt.tmp"
        torch.save(state, tmp)
        os.replace(tmp, self.out / "state.pt")

    def _resume(self) -> None:
        path = self.out / "state.pt"
        if not path.is_file():
            return
        s = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(s["model"])
        self.optimizer.load_state_dict(s["optimizer"])
        self.scheduler.load_state_dict(s["scheduler"])
        self.scaler.load_state_dict(s["scaler"])
        self._set_rng_state(s["rng"])
        self.step, self.epoch, self.pos, self.best = s["step"], s["epoch"], s["pos"], s["best"]
        self.history = json.loads(s["history"])
        if self.main:
            LOG.info("resumed %s at step %d (epoch %d, batch %d)", path, self.step, self.epoch, self.pos)

    # -- data ----------------------------------------------------------------------------------

    MIN_BATCHES_PER_EPOCH = 20

    def _epoch_indices(self, epoch: int) -> list[int]:
        """This rank's sample order for an epoch: a seeded permutation; tiny datasets chain
        several permutations so that an epoch has at least MIN_BATCHES_PER_EPOCH batches (a
        DataLoader with workers is started once per epoch, which must not be once per step)."""
        bs = self.cfg.optim.batch_size
        n = len(self.dataset)
        reps = max(1, -(-self.MIN_BATCHES_PER_EPOCH * bs * self.world // n))
        perm: list[int] = []
        for r in range(reps):
            g = torch.Generator().manual_seed((self.cfg.train.seed * 100003 + epoch) * 101 + r)
            perm += torch.randperm(n, generator=g).tolist()
        mine = perm[self.rank::self.world]
        n_batches = max(1, len(mine) // bs)
        return mine[: n_batches * bs]

    def _loader(self, indices: list[int]):
        w = self.cfg.data.workers
        return torch.utils.data.DataLoader(self.dataset, batch_size=self.cfg.optim.batch_size,
                                           sampler=_Positions(indices), num_workers=w,
                                           pin_memory=self.device.type == "cuda", drop_last=True,
                                           persistent_workers=False)

    # -- training ------------------------------------------------------------------------------

    def _to_device(self, batch: dict) -> dict:
        out = {}
        for k, v in batch.items():
            out[k] = self._to_device(v) if isinstance(v, dict) else (
                v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v)
        return out

    def train_step(self, batch: dict) -> tuple[float, dict]:
        self.net.train()
        freeze = self.step < self.cfg.optim.freeze_backbone_steps
        for n, p in self.model.named_parameters():
            if n.startswith(self._frozen):
                p.requires_grad_(False)
            elif n.startswith("backbone."):
                p.requires_grad_(not freeze)
        batch = self._to_device(batch)
        with torch.autocast(self.device.type, enabled=self.amp):
            outputs = self.net(batch["image"].contiguous(memory_format=self.memory_format))
        outputs = [tuple(t.float() for t in o) for o in outputs]
        loss, parts = self.loss_fn(outputs, batch["targets"], self.stage_strides)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.optim.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.step += 1
        parts = {k: float(v) for k, v in parts.items()}
        parts["grad_norm"] = float(gn)
        self._last = (batch, outputs)
        return float(loss.detach()), parts

    def _writer(self):
        if self.writer is None and self.main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.out / "tb"), purge_step=self.step)
        return self.writer

    def _log_images(self) -> None:
        batch, outputs = self._last
        k = self.model.skeleton.num_keypoints
        stride = self.stage_strides[-1]
        tgt = batch["targets"][f"s{stride}"]
        pred_h = self.activation(outputs[-1][0][0, :k].detach()).clamp(0, 1).amax(0)
        tgt_h = tgt["heatmaps"][0, :k].amax(0)
        row = [pred_h, tgt_h]
        if len(outputs[-1]) > 1:
            pp = outputs[-1][1][0].detach()
            row += [pp.reshape(-1, 2, *pp.shape[1:]).norm(dim=1).amax(0).clamp(0, 1),
                    tgt["pafs"][0].reshape(-1, 2, *pp.shape[1:]).norm(dim=1).amax(0).clamp(0, 1)]
        img = torch.cat([r.float().cpu() for r in row], dim=1)[None]
        self._writer().add_image("fields/pred_heat|target_heat|pred_paf|target_paf", img, self.step)

    def evaluate(self) -> dict | None:
        """Validation AP with the pipeline's decoder (rank 0)."""
        if self.cfg.data.val is None or not self.main:
            return None
        from posestream.models.fields import DecoderConfig
        from posestream.models.predictor import Predictor

        from .evaluation.evaluate import evaluate_coco

        e = self.cfg.eval
        pred = Predictor.from_model(self.model, self.meta, str(self.device), decoder=DecoderConfig.from_dict(e.decoder),
                                    input_size=e.input_size or self.cfg.data.input_size, flip=e.flip)
        stats = evaluate_coco(pred, self.cfg.data.val["ann"], self.cfg.data.val["images"], progress=self.progress)
        self.model.train()
        return stats

    def _save_model(self, name: str, metrics: dict | None) -> Path:
        return save_checkpoint(self.out / name, self.model, recipe=self.cfg.to_dict(), metrics=metrics or {},
                               meta_update={"input_size": self.cfg.eval.input_size or self.cfg.data.input_size,
                                            "heatmap_activation": self.activation_name})

    def _plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
        h = self.history
        if h["step"]:
            ax[0].plot(h["step"], h["loss"], lw=0.8)
            ax[0].set_yscale("log")
        ax[0].set_xlabel("step")
        ax[0].set_ylabel("training loss")
        if h["eval_step"]:
            ax[1].plot(h["eval_step"], h["AP"], marker="o")
        ax[1].set_xlabel("step")
        ax[1].set_ylabel("validation AP")
        fig.suptitle(f"{self.cfg.model.name}: {self.out}")
        fig.tight_layout()
        fig.savefig(self.out / "curves.png", dpi=100)
        plt.close(fig)

    def _eval_and_keep(self) -> dict | None:
        stats = self.evaluate()
        if self.main:
            metrics = None
            if stats is not None:
                metrics = {k: v for k, v in stats.items() if k != "results_json"}
                self.history["eval_step"].append(self.step)
                self.history["AP"].append(stats["AP"])
                w = self._writer()
                for k in ("AP", "AP50", "AP75", "APm", "APl", "AR"):
                    w.add_scalar(f"val/{k}", stats[k], self.step)
                if stats["AP"] > self.best:
                    self.best = stats["AP"]
                    self._save_model("best.pt", metrics)
            self._save_model("last.pt", metrics)
            self._plot()
        if self.distributed:
            dist.barrier()
        return stats

    def fit(self, stop_at: int | None = None) -> dict | None:
        """Train to ``train.max_steps`` (resuming if a state exists); returns the final eval.

        Args:
            stop_at: stop early at this step and save the state, as an interruption would
                (the schedule still follows ``max_steps``).
        """
        from tqdm import tqdm

        t = self.cfg.train
        bar = tqdm(total=t.max_steps, initial=self.step, desc=f"train {self.cfg.model.name}", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        last_eval = None
        t0, step0 = time.time(), self.step
        while self.step < t.max_steps and (stop_at is None or self.step < stop_at):
            indices = self._epoch_indices(self.epoch)
            self.dataset.set_epoch(self.epoch)
            start = self.pos * self.cfg.optim.batch_size
            for batch in self._loader(indices[start:]):
                loss, parts = self.train_step(batch)
                self.pos += 1
                if not math.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss} at step {self.step}")
                if self.main:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.4g}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                    if self.step % t.log_every == 0 or self.step == 1:
                        w = self._writer()
                        w.add_scalar("train/loss", loss, self.step)
                        for k, v in parts.items():
                            w.add_scalar(f"train/{k}", v, self.step)
                        for g in self.optimizer.param_groups:
                            w.add_scalar(f"lr/{g['name']}", g["lr"], self.step)
                        w.add_scalar("train/images_per_s", (self.step - step0) * self.cfg.optim.batch_size * self.world
                                     / max(1e-9, time.time() - t0), self.step)
                        self.history["step"].append(self.step)
                        self.history["loss"].append(loss)
                    if self.step % t.image_every == 0:
                        self._log_images()
                if self.step % t.ckpt_every == 0:
                    self.save_state()
                if self.step % t.eval_every == 0:
                    last_eval = self._eval_and_keep()
                if self.step >= t.max_steps or (stop_at is not None and self.step >= stop_at):
                    break
            else:
                self.epoch += 1
                self.pos = 0
        bar.close()
        if stop_at is not None and self.step < t.max_steps:
            self.save_state()
            return None
        if not self.history["eval_step"] or self.history["eval_step"][-1] != self.step:
            last_eval = self._eval_and_keep()
        self.save_state()
        if self.main:
            (self.out / "history.json").write_text(json.dumps(self.history))
            if self.writer:
                self.writer.flush()
        return last_eval

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.distributed and dist.is_initialized():
            dist.destroy_process_group()
