"""Config sections as dataclasses: one rule for building them from YAML dicts."""
from __future__ import annotations

import dataclasses

__all__ = ["from_section"]


def from_section(cls, d: dict | None, noun: str):
    """Build dataclass ``cls`` from a config section; an unknown key is a ``ValueError`` naming it
    (``unknown {noun} 'key'; known: ...``)."""
    d = dict(d or {})
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {noun} {unknown[0]!r}; known: {', '.join(sorted(known))}")
    return cls(**d)
