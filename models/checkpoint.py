"""Checkpoint format: weights plus everything needed to use them.

A checkpoint is a ``torch.save``d dict of plain types and tensors, loadable with
``torch.load(weights_only=True)`` (never pickle of arbitrary objects)::

    {"format": "posestream-checkpoint", "version": 1,
     "meta": {"arch", "arch_kwargs", "stride", "input_size", "mean", "std", "skeleton", ...,
              "recipe": {...}, "metrics": {...}},
     "state_dict": {name: tensor}}

Errors are :class:`CheckpointError` with one line naming the file and what is wrong.
"""
from __future__ import annotations

import os
from pathlib import Path


__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "load_weights_into", "read_checkpoint", "FORMAT",
           "VERSION"]

FORMAT = "posestream-checkpoint"
VERSION = 1


class CheckpointError(Exception):
    """A checkpoint cannot be used: missing, corrupt, or for another model."""


def save_checkpoint(path: str | os.PathLike, model, recipe: dict | None = None, metrics: dict | None = None,
                    extra: dict | None = None, half: bool = False, meta_update: dict | None = None) -> Path:
    """Write ``model``'s weights and metadata atomically (a partial file never replaces a good one).

    Args:
        half: store floating-point tensors as float16 (they are cast back on load).
        meta_update: metadata that overrides or extends ``model.meta()`` (e.g. the trained input
            size, ``heatmap_activation``).
    """
    path = Path(path)
    meta = {**model.meta(), **(meta_update or {})}
    meta["recipe"] = recipe or {}
    meta["metrics"] = metrics or {}
    state = {k: (v.detach().cpu().half() if half and v.is_floating_point() else v.detach().cpu())
             for k, v in model.state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "meta": meta, "state_dict": state}
    if extra:
        payload["extra"] = extra
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    import torch

    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def read_checkpoint(path: str | os.PathLike) -> dict:
    """Load and validate the checkpoint dict (no model is built)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    import torch

    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types for garbage input
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:160]})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a posestream checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path}: checkpoint format version {payload.get('version')} is not supported "
                              f"(this posestream reads version {VERSION})")
    return payload


def _describe_mismatch(model_state: dict, ckpt_state: dict) -> str:
    missing = [k for k in model_state if k not in ckpt_state]
    unexpected = [k for k in ckpt_state if k not in model_state]
    shapes = [k for k in model_state if k in ckpt_state and tuple(model_state[k].shape) != tuple(ckpt_state[k].shape)]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing tensors (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected tensors (e.g. {unexpected[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} shape mismatches (e.g. {k}: checkpoint {tuple(ckpt_state[k].shape)} vs "
                     f"model {tuple(model_state[k].shape)})")
    return "; ".join(parts)


def load_checkpoint(path: str | os.PathLike, arch: str | None = None, **overrides):
    """Build the checkpoint's model and load its weights.

    Args:
        arch: if given, the architecture the caller expects; a checkpoint of another one is an error.
        overrides: architecture arguments that replace the stored ones.

    Returns:
        (model in eval mode, meta dict)
    """
    payload = read_checkpoint(path)
    meta = payload["meta"]
    name = meta.get("arch")
    if arch is not None and name != arch:
        raise CheckpointError(f"{path}: checkpoint is for model {name!r}, not {arch!r}")
    kwargs = {**meta.get("arch_kwargs", {}), **overrides}
    from .registry import build_model

    try:
        model = build_model(name, **kwargs)
    except KeyError as e:
        raise CheckpointError(f"{path}: {e.args[0]}") from None
    return _load_into(model, payload, path), meta


def _load_into(model, payload: dict, path) -> torch.nn.Module:
    state = payload["state_dict"]
    own = model.state_dict()
    problem = _describe_mismatch(own, state)
    if problem:
        name = payload["meta"].get("arch")
        raise CheckpointError(f"{path}: weights do not fit model {model.arch.get('name', name)!r} "
                              f"(checkpoint arch {name!r}): {problem}")
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()}, strict=True)
    return model.eval()


def load_weights_into(model, path: str | os.PathLike):
    """Load a checkpoint's weights into an existing model (e.g. to fine-tune); strict, with the
    same one-line errors as :func:`load_checkpoint`."""
    return _load_into(model, read_checkpoint(path), path)
