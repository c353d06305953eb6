"""The grouping kernels compiled ahead of time (``numba.pycc``), loaded without importing Numba.

``import numba`` (~0.3 s) and the first call's cache load of the JIT kernels (~0.3 s) sit on the
inference process's critical path at every start. ``posestream warmup`` (run by ``make install``)
calls :func:`build`: the two entry points the decoder calls, ``group`` and ``group_candidates`` of
``_numba.py``, compiled for this host's CPU into one extension module in the posestream cache
(``$POSESTREAM_CACHE`` or ``~/.cache/posestream``, folder ``aot``). Its file name carries a hash of
``_numba.py``, of this file's signatures, of the Numba, NumPy and Python versions and of the CPU
(:func:`build_key`), so an edited kernel, an upgrade or another host never loads a stale build.

:func:`kernels` is what the decoder calls through: that module when a matching build exists, else
``_numba`` (the JIT kernels, exactly as without a build). ``POSESTREAM_AOT=0`` forces the JIT.
Both compile the same LLVM IR without fast-math, so they return the same bits
(``tests/test_aot.py``). One difference: the AOT entry points hold the GIL while they run.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.machinery
import importlib.util
import os
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["SIGNATURES", "build", "build_key", "cache_dir", "group", "group_candidates", "kernels", "load",
           "module_path", "use", "using_aot"]

#: The entry points and their types at the decoder's call sites (``decoder.group`` /
#: ``decoder.decode_graph``: float32 C-contiguous maps, int64 limbs and candidate indices,
#: Python float / int / bool settings).
SIGNATURES = {
    "group": "Tuple((f8[:,:,::1], f8[::1]))(f4[:,:,::1], f4[:,:,::1], i8[:,::1], f8, f8, i8, i8, f8, f8, f8, "
             "i8, f8, b1, f8)",
    "group_candidates": "Tuple((f8[:,:,::1], f8[::1]))(f4[:,:,::1], f4[:,::1], i8[:,::1], f4[:,:,::1], f8, "
                        "i8[:,::1], f8, f8, i8, i8, f8, f8, f8, i8, f8, b1, f8)",
}
_REVISION = 1  # bump when the build itself changes (options, target)
_PREFIX = "posestream_grouping_"
_SOURCE = Path(__file__).with_name("_numba.py")


def cache_dir(root: str | os.PathLike | None = None) -> Path:
    """Where builds live: ``root`` or the posestream cache (the convention of ``stream/infer.py``:
    ``$POSESTREAM_CACHE``, else ``~/.cache/posestream``), folder ``aot``."""
    base = root or os.environ.get("POSESTREAM_CACHE") or Path.home() / ".cache" / "posestream"
    return Path(base) / "aot"


def _numba_version_text() -> bytes:
    """The installed Numba's ``_version.py`` (its version and revision), read without importing it."""
    spec = importlib.util.find_spec("numba")
    if spec is None or not spec.submodule_search_locations:
        return b"no numba"
    try:
        return Path(list(spec.submodule_search_locations)[0], "_version.py").read_bytes()
    except OSError:
        return b"numba without _version.py"


def _cpu_text() -> bytes:
    """This CPU's model and feature flags (Linux: the first processor of ``/proc/cpuinfo``)."""
    import platform

    lines = []
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if not line.strip():
                    break
                if line.startswith((b"model name", b"flags", b"vendor_id", b"cpu family", b"model\t", b"Features",
                                    b"CPU part", b"CPU implementer")):
                    lines.append(line.strip())
    except OSError:
        pass
    return b"\n".join(lines) + platform.machine().encode()  # not platform.processor(): it runs uname -p


def build_key() -> str:
    """Hash of everything a build depends on: the kernels' source, the signatures, Numba, NumPy,
    Python, the platform and the CPU. Computed without importing Numba (a few milliseconds)."""
    h = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), repr((_REVISION, sorted(SIGNATURES.items()))).encode(), _numba_version_text(),
                 np.__version__.encode(), sys.version.encode(), sys.platform.encode(),
                 importlib.machinery.EXTENSION_SUFFIXES[0].encode(), _cpu_text()):
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:20]


def module_path(root: str | os.PathLike | None = None, key: str | None = None) -> Path:
    """The extension module a build for ``key`` (default: this host's :func:`build_key`) writes."""
    return cache_dir(root) / f"{_PREFIX}{key or build_key()}{importlib.machinery.EXTENSION_SUFFIXES[0]}"


def load(root: str | os.PathLike | None = None):
    """The AOT module built for this host and these sources, or None (no such build, or
    ``POSESTREAM_AOT=0``). Does not import Numba."""
    if os.environ.get("POSESTREAM_AOT", "1").strip().lower() in ("0", "false", "no", "off"):
        return None
    key = build_key()
    path = module_path(root, key)
    if not path.is_file():
        return None
    name = _PREFIX + key
    try:
        spec = importlib.util.spec_from_file_location(name, path,
                                                      loader=importlib.machinery.ExtensionFileLoader(name, str(path)))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
    except (ImportError, OSError):
        return None
    if not all(callable(getattr(mod, n, None)) for n in SIGNATURES):
        return None
    return mod


class _AotKernels:
    """The AOT module's entry points behind the JIT kernels' interface. The AOT wrappers do not
    check array dtypes or layouts (a wrong one would be read as raw memory), so arrays are made the
    signature's dtype and C-contiguous first (a no-op for the decoder's own arrays)."""

    def __init__(self, mod):
        self.module = mod
        self._group = mod.group
        self._group_candidates = mod.group_candidates

    def group(self, heat, paf, limbs, *settings):
        return self._group(np.ascontiguousarray(heat, np.float32), np.ascontiguousarray(paf, np.float32),
                           np.ascontiguousarray(limbs, np.int64), *settings)

    def group_candidates(self, heat, cand_score, cand_index, paf, factor, limbs, *settings):
        return self._group_candidates(np.ascontiguousarray(heat, np.float32),
                                      np.ascontiguousarray(cand_score, np.float32),
                                      np.ascontiguousarray(cand_index, np.int64),
                                      np.ascontiguousarray(paf, np.float32), factor,
                                      np.ascontiguousarray(limbs, np.int64), *settings)


_KERNELS = None


def kernels():
    """``group`` / ``group_candidates`` for the decoder: the AOT build when one matches (first call:
    a few milliseconds), else the JIT kernels of ``_numba`` (first call imports Numba)."""
    global _KERNELS
    if _KERNELS is None:
        mod = load()
        if mod is not None:
            _KERNELS = _AotKernels(mod)
        else:
            from . import _numba

            _KERNELS = _numba
    return _KERNELS


@contextlib.contextmanager
def use(which: str, root: str | os.PathLike | None = None):
    """Within the block, :func:`kernels` is the AOT build (``"aot"``; from ``root``'s cache if
    given; RuntimeError when there is none) or the JIT kernels (``"jit"``). For the warm-up and
    the tests, which compare both in one process."""
    global _KERNELS
    if which == "aot":
        mod = load(root)
        if mod is None:
            raise RuntimeError(f"no ahead-of-time build of the grouping kernels at {module_path(root)}")
        chosen = _AotKernels(mod)
    elif which == "jit":
        from . import _numba

        chosen = _numba
    else:
        raise ValueError(f"use() takes 'aot' or 'jit', got {which!r}")
    saved, _KERNELS = _KERNELS, chosen
    try:
        yield chosen
    finally:
        _KERNELS = saved


def using_aot() -> bool:
    """True when :func:`kernels` is the AOT build (resolves it)."""
    return isinstance(kernels(), _AotKernels)


def group(*args):
    """``_numba.group`` through :func:`kernels`."""
    return kernels().group(*args)


def group_candidates(*args):
    """``_numba.group_candidates`` through :func:`kernels`."""
    return kernels().group_candidates(*args)


def build(root: str | os.PathLike | None = None, quiet: bool = True) -> Path:
    """Compile ``group`` and ``group_candidates`` into this host's AOT module (see the module
    docstring) unless it exists: its path. Other builds in the folder (other sources or versions)
    are removed. Raises when it cannot build (e.g. no C compiler); the JIT kernels then serve."""
    key = build_key()
    path = module_path(root, key)
    if path.is_file():
        return path
    import warnings

    from . import _numba

    with warnings.catch_warnings():  # "pending deprecation": there is no replacement yet
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", PendingDeprecationWarning)
        from numba.pycc import CC

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=path.parent))
    try:
        cc = CC(_PREFIX + key, source_module=_numba)
        cc.output_dir = str(tmp)
        cc.target_cpu = "host"  # the JIT's target too; the key names the CPU
        cc.verbose = not quiet
        for name, sig in SIGNATURES.items():
            cc.export(name, sig)(getattr(_numba, name).py_func)
        if quiet:  # the compiler's command lines and warnings go to fd 1 / 2 of this process
            with _silenced():
                cc.compile()
        else:
            cc.compile()
        built = tmp / cc.output_file
        os.replace(built, path)  # atomic: a reader sees no build or a whole one
    except BaseException:
        # pycc leaves its own build folder behind when the C compiler or the linker fails
        for left in Path(tempfile.gettempdir()).glob(f"pycc-build-{_PREFIX}{key}-*"):
            shutil.rmtree(left, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for old in path.parent.glob(_PREFIX + "*"):
        if old != path and old.is_file():
            try:
                old.unlink()
            except OSError:
                pass
    return path


class _silenced:
    """Redirect file descriptors 1 and 2 to /dev/null (what a C compiler run by distutils writes);
    restored on exit."""

    def __enter__(self):
        sys.stdout.flush()
        sys.stderr.flush()
        self._saved = [os.dup(1), os.dup(2)]
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.dup2(null, 2)
        os.close(null)
        return self

    def __exit__(self, *exc):
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, saved in zip((1, 2), self._saved):
            os.dup2(saved, fd)
            os.close(saved)
        return False
