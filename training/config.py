"""Training configuration: YAML sections -> dataclasses, unknown keys are errors naming the key.

A config file has the sections ``model``, ``data``, ``loss``, ``optim``, ``train`` and ``eval``;
``posestream train --config X.yaml optim.lr=3e-4 train.max_steps=100`` overrides single values
(the value is parsed as YAML).
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import yaml

__all__ = ["ConfigError", "TrainConfig", "load_config", "apply_overrides"]


class ConfigError(ValueError):
    """A configuration problem; the message names the file and key."""


def _coerce(value, annotation: str, key: str):
    """YAML 1.1 reads ``1e-4`` as a string; numbers given that way are converted, others refused."""
    kinds = [a.strip() for a in str(annotation).split("|")]
    if value is None and "None" in kinds:
        return value
    if "float" in kinds and isinstance(value, (int, float, str)) and not isinstance(value, bool):
        try:
            return float(value)
        except ValueError:
            raise ConfigError(f"{key} must be a number, got {value!r}") from None
    if "int" in kinds and not isinstance(value, int) or "int" in kinds and isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if "bool" in kinds and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    return value


def _build(cls, d: dict | None, where: str):
    d = dict(d or {})
    known = {f.name: f for f in fields(cls)}
    for k in d:
        if k not in known:
            raise ConfigError(f"unknown key {where}.{k}; known: {', '.join(known)}")
    return cls(**{k: _coerce(v, known[k].type, f"{where}.{k}") for k, v in d.items()})


@dataclass
class ModelSection:
    name: str = "lite"
    kwargs: dict = field(default_factory=dict)
    init: str | None = None  # a posestream checkpoint to start from (fine-tuning)
    pretrained: str | None = None  # a folder of external weights for model.load_pretrained (e.g. MoveNet's)


@dataclass
class DataSection:
    train: list = field(default_factory=list)   # [{ann: ..., images: ...}, ...]
    val: dict | None = None                      # {ann: ..., images: ...}
    input_size: int = 256
    sigma: float = 2.0                           # heatmap sigma, grid cells
    paf_width: float = 1.0                       # PAF half-width, grid cells
    augment: dict = field(default_factory=dict)  # training.data.augment.AugmentConfig
    workers: int = 2
    subset: list | None = None                   # image ids to keep (e.g. tiny overfitting runs)


@dataclass
class OptimSection:
    lr: float = 1e-3
    backbone_lr: float | None = None             # None: same as lr
    weight_decay: float = 1e-4
    batch_size: int = 8
    warmup_steps: int = 100
    schedule: str = "cosine"                     # cosine | constant
    grad_clip: float = 5.0
    freeze_backbone_steps: int = 0
    unfreeze_warmup_steps: int = 0               # backbone LR ramps up over this many steps after unfreezing
    frozen: list = field(default_factory=list)   # parameter-name prefixes never trained (e.g. backbone.stem.)


@dataclass
class TrainSection:
    out_dir: str = "runs/default"
    max_steps: int = 1000
    seed: int = 0
    amp: bool = True                             # used on CUDA only
    log_every: int = 10
    eval_every: int = 500
    ckpt_every: int = 100
    image_every: int = 200
    device: str | None = None                    # default: cuda if available
    channels_last: bool = False                  # NHWC activations (CPU: ~1.8x faster depthwise convs)


@dataclass
class EvalSection:
    input_size: int | None = None                # default: data.input_size
    flip: bool = False
    decoder: dict = field(default_factory=dict)


@dataclass
class TrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    loss: dict = field(default_factory=dict)     # training.losses.LossConfig
    optim: OptimSection = field(default_factory=OptimSection)
    train: TrainSection = field(default_factory=TrainSection)
    eval: EvalSection = field(default_factory=EvalSection)

    @classmethod
    def from_dict(cls, d: dict, where: str = "config") -> "TrainConfig":
        sections = {"model": ModelSection, "data": DataSection, "optim": OptimSection, "train": TrainSection,
                    "eval": EvalSection}
        d = dict(d or {})
        for k in d:
            if k not in sections and k != "loss":
                raise ConfigError(f"{where}: unknown section {k!r}; known: model, data, loss, optim, train, eval")
        try:
            built = {k: _build(c, d.get(k), k) for k, c in sections.items()}
        except ConfigError as e:
            raise ConfigError(f"{where}: {e}") from None
        except TypeError as e:
            raise ConfigError(f"{where}: {e}") from None
        return cls(loss=dict(d.get("loss") or {}), **built)

    def to_dict(self) -> dict:
        return asdict(self)


def apply_overrides(d: dict, overrides: list[str]) -> dict:
    """``a.b=value`` strings applied to a nested dict (values parsed as YAML)."""
    d = copy.deepcopy(d)
    for o in overrides:
        if "=" not in o:
            raise ConfigError(f"override {o!r} is not KEY=VALUE (e.g. optim.lr=3e-4)")
        key, value = o.split("=", 1)
        parts = key.split(".")
        node = d
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {o!r}: {p} is not a section")
        node[parts[-1]] = yaml.safe_load(value)
    return d


def load_config(path: str | Path, overrides: list[str] | None = None) -> TrainConfig:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    return TrainConfig.from_dict(apply_overrides(d, overrides or []), where=str(path))
