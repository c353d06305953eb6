"""A module imported on first attribute access: for heavy libraries (PyAV, OpenCV) that a module
uses only in some of its functions, so that the supervisor process, which only validates
configuration with that module's config classes, does not pay their import at start-up."""
from __future__ import annotations

import importlib
from types import ModuleType


class LazyModule:
    """``av = LazyModule("av")``: ``av.open(...)`` imports PyAV on first use."""

    def __init__(self, name: str) -> None:
        self._name = name
        self._module: ModuleType | None = None

    def __getattr__(self, attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        module = self._module
        if module is None:
            module = self._module = importlib.import_module(self._name)
        return getattr(module, attr)

    def __repr__(self) -> str:
        return f"<lazy module {self._name!r}{' (imported)' if self._module is not None else ''}>"
