"""Model registry: ``@register_model`` on short variant functions, ``build_model(name, **kwargs)``.

Architectures live in ``models/nets/``; they are imported on first use so that importing
``models`` (e.g. for the decoder) does not import torch.
"""
from __future__ import annotations

import importlib
from typing import Callable

__all__ = ["register_model", "build_model", "list_models", "model_entrypoint", "model_kind", "KINDS"]

_REGISTRY: dict[str, Callable] = {}
_LOADED = False


KINDS = ("bottomup", "topdown")


def register_model(fn: Callable | None = None, *, kind: str = "bottomup"):
    """Register a variant function under its own name; it returns a ``PoseNet``.

    ``kind``: ``bottomup`` (finds every person in an image: what ``posestream run --model`` takes)
    or ``topdown`` (one person in a crop around a person found by a bottom-up model: what
    ``--refine`` runs). Use as ``@register_model`` or ``@register_model(kind="topdown")``.
    """
    if kind not in KINDS:
        raise ValueError(f"model kind must be one of {KINDS}, got {kind!r}")

    def add(f: Callable) -> Callable:
        name = f.__name__
        if name in _REGISTRY and _REGISTRY[name] is not f:
            raise ValueError(f"model {name!r} is registered twice")
        f.kind = kind
        _REGISTRY[name] = f
        return f

    return add(fn) if fn is not None else add


def _load() -> None:
    global _LOADED
    if not _LOADED:
        importlib.import_module("posestream.models.nets")
        _LOADED = True


def list_models(kind: str | None = None) -> list[str]:
    """Sorted names of every registered model (of one ``kind`` when given)."""
    _load()
    return sorted(n for n, f in _REGISTRY.items() if kind is None or f.kind == kind)


def model_kind(name: str) -> str:
    """``bottomup`` or ``topdown`` (KeyError for an unknown name)."""
    return model_entrypoint(name).kind


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
