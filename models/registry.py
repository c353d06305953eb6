"""Model registry: ``@register_model`` on short variant functions, ``build_model(name, **kwargs)``.

Architectures live in ``models/nets/``; they are imported on first use so that importing
``models`` (e.g. for the decoder) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["register_model", "build_model", "list_models", "model_entrypoint"]

_REGISTRY: dict[str, Callable] = {}
_LOADED = False


def register_model(fn: Callable) -> Callable:
    """Register a variant function under its own name; it returns a ``PoseNet``."""
    name = fn.__name__
    if name in _REGISTRY and _REGISTRY[name] is not fn:
        raise ValueError(f"model {name!r} is registered twice")
    _REGISTRY[name] = fn
    return fn


def _load() -> None:
    global _LOADED
    if not _LOADED:
        importlib.import_module("posestream.models.nets")
        _LOADED = True


def list_models() -> list[str]:
    """Sorted names of every registered model."""
    _load()
    return sorted(_REGISTRY)


def model_entrypoint(name: str) -> Callable:
    _load()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; known models: {', '.join(sorted(_REGISTRY))}") from None


def build_model(name: str, **kwargs):
    """Build a registered model. The name and arguments are kept on the model (``model.arch``)
    so that a checkpoint can rebuild it."""
    model = model_entrypoint(name)(**kwargs)
    model.arch = {"name": name, "kwargs": dict(kwargs)}
    return model
