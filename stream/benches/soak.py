"""Soak test: bounded memory for 24/7 runs (RSS, fds, rings per process over a looping live source).

A looping live source runs through the whole pipeline while RSS, open fds and shared-memory
entries are sampled on time for every process.

The source (default ``../shared/data/videos/vtest.avi`` from the repo root) is played forever
(``source_options.file.loop``: every pass a new epoch) at full speed with the live policy, through
capture, inference, tracking and output (render + an MP4 recording + JSON Lines, both in a
temporary folder, removed at the end unless ``--out-dir`` is given; the MP4 grows, that is
expected: its size is reported). Results are taken from :class:`posestream.Pipeline` and dropped.

Every ``--interval`` s, for every pipeline process (``capture0``, ``infer``, ``track``,
``output``) and for this process (``supervisor``): RSS (``/proc/PID/status`` VmRSS, MB = 2**20
bytes) and open fds (``/proc/PID/fd``); the ``/dev/shm/psring-*`` entries (all of them, and this
pipeline's own) and the entries of the pipeline's private folder. Growth = last sample - first
sample at or after ``--warmup`` s. After ``close()``: nothing of the pipeline may be left in
``/dev/shm`` and its private folder must be gone.

Exit status: 0 when every process grew less than ``--goal-mb`` and fds, rings and private-folder
entries stayed flat (last <= first + 2) and nothing was left after close; 1 otherwise (the
reasons are printed); 2 for a bad argument (missing source, unknown model); 130 when stopped by
Ctrl-C or SIGTERM (the pipeline is closed and the table of what was sampled still printed; a
second Ctrl-C while closing is ignored, closing is bounded by the pipeline's stop timeout).

The default model is ``lite`` (random weights, ~50 fps on 2 cores): more frames per minute
through every stage, which is what a leak test wants; ``--model default`` runs the shipped model
(~10 fps on 2 cores).

  posestream bench soak --minutes 30
  posestream bench soak --minutes 1440 --interval 60 --warmup 600 --json soak.json --plot soak.png \\
      --out-dir /data/soak
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shlex
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SOURCE = "../shared/data/videos/vtest.avi"  # relative to the repo root
SUPERVISOR = "supervisor"
SHM_ROOT = "/dev/shm"
FLAT_SLACK = 2          # fds / entries may end at most this many above their first sample
MP4_MB_PER_MIN = 40.0  # what the recording grew by on vtest.avi with lite (~40 fps), for the free-space warning
STALL_S = 60.0          # no result for this long: the run is stopped and fails


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--minutes", type=float, default=30.0, help="how long to run (default: %(default)s)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default: %(default)s)")
    p.add_argument("--warmup", type=float, default=60.0,
                   help="seconds excluded from the growth figures (default: %(default)s)")
    p.add_argument("--model", default="lite",
                   help="model (default: %(default)s: random weights, fast: more frames per minute; "
                        "'default' is the shipped model, ~5x slower)")
    p.add_argument("--source", default=None,
                   help=f"video file, played in a loop (default: {DEFAULT_SOURCE} from the repo root)")
    p.add_argument("--goal-mb", type=float, default=5.0,
                   help="largest RSS growth per process after warm-up that passes (default: %(default)s)")
    p.add_argument("--json", metavar="PATH", help="write every sample and the results as JSON")
    p.add_argument("--plot", metavar="PNG", help="plot RSS and fds per process over time")
    p.add_argument("--out-dir", metavar="DIR",
                   help="write the MP4 and JSONL here and keep them (default: a temporary folder, removed)")


# -- measurements ------------------------------------------------------------------------------------

def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        return None
    return None


def fd_count(pid: int) -> int | None:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return None


def ring_maps(pid: int) -> int | None:
    """Shared-memory ring mappings of a process (``/proc/PID/maps`` lines naming a ``psring-``
    file): the rings are unlinked once both sides mapped them, so a ring that is never unmapped
    shows here, not in ``/dev/shm``."""
    try:
        with open(f"/proc/{pid}/maps") as f:
            return sum("psring-" in line for line in f)
    except OSError:
        return None


def shm_entries(prefix: str = "psring-") -> int:
    return len(glob.glob(os.path.join(SHM_ROOT, prefix + "*")))


def folder_entries(folder: str | None) -> int | None:
    if folder is None:
        return None
    try:
        return len(os.listdir(folder))
    except OSError:
        return None


def file_mb(path: str | None) -> float | None:
    try:
        return os.path.getsize(path) / 2**20 if path else None
    except OSError:
        return None


def cpu_flags() -> str:
    """The interesting x86 flags of this CPU (avx2, avx512*, amx*, avx_vnni)."""
    from ..backends import cpu_flags as all_flags

    flags = all_flags()
    if not flags:
        return "(unknown: no /proc/cpuinfo flags)"
    keep = sorted(x for x in flags if x == "avx2" or x.startswith(("avx512", "amx")) or x == "avx_vnni")
    return " ".join(keep) or "(none of avx2 / avx512* / amx* / avx_vnni)"


def command_line() -> str:
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "posestream"
    if prog in ("__main__.py", "-c", "-m"):
        prog = "python -m posestream"
    return " ".join([prog] + [shlex.quote(a) for a in sys.argv[1:]])


# -- sampling ----------------------------------------------------------------------------------------

class Sampler:
    """Samples on time in a thread (so a stalled pipeline is still sampled, and noticed), and keeps
    the progress bar. The main thread only takes results and counts them (``frames``)."""

    def __init__(self, pipe, interval: float, minutes: float, files: dict, wake=None, bar: bool = True) -> None:
        from tqdm import tqdm

        self.wake = wake                   # called (from this thread) to wake a main thread stuck in the iterator
        self.lock = threading.Lock()

        self.pipe = pipe
        self.interval = interval
        self.duration = minutes * 60.0
        self.files = files
        self.folder = pipe._sup.folder if pipe._sup is not None else None
        self.own_prefix = None
        if self.folder is not None:
            from posestream.stream.transport import _folder_hash

            self.own_prefix = f"psring-{_folder_hash(self.folder)}-"
        self.samples: list[dict] = []
        self.frames = 0
        self.last_result = time.monotonic()
        self.t0 = time.monotonic()
        self.done = threading.Event()      # set by the sampler: time is up (or stalled)
        self.stop = threading.Event()      # set by the main thread: stop sampling
        self.stalled = False
        self.error: str | None = None
        self._interrupted_main = False
        self._bar = tqdm(total=round(minutes, 3), unit="min", file=sys.stderr, dynamic_ncols=True,
                         bar_format="{l_bar}{bar}| {n:.2f}/{total:.2f} min{postfix}", disable=not bar)
        # on a terminal: every second; into a log file: every 30 s (a 24 h run stays readable)
        self._refresh_s = 1.0 if getattr(sys.stderr, "isatty", lambda: False)() else 30.0
        self._next_refresh = 0.0
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def start(self) -> None:
        self.t0 = self.last_result = time.monotonic()
        self.sample()
        self._thread.start()

    def sample(self) -> dict:
        t = time.monotonic() - self.t0
        pids = dict(self.pipe.pids)
        pids[SUPERVISOR] = os.getpid()
        procs = {name: {"pid": pid, "rss_mb": rss_mb(pid), "fds": fd_count(pid), "ring_maps": ring_maps(pid)}
                 for name, pid in pids.items()}
        s = {"t_s": round(t, 3), "frames": self.frames, "procs": procs,
             "shm_psring": shm_entries(), "shm_pipeline": shm_entries(self.own_prefix) if self.own_prefix else None,
             "folder_entries": folder_entries(self.folder),
             **{f"{k}_mb": file_mb(v) for k, v in self.files.items()}}
        self.samples.append(s)
        return s

    def _run(self) -> None:
        try:
            next_t = self.interval
            while not self.stop.wait(1.0):
                now = time.monotonic()
                t = now - self.t0
                if t >= next_t:
                    s = self.sample()
                    next_t += self.interval * max(1, int((t - next_t) // self.interval) + 1)
                    rss = sum(p["rss_mb"] or 0.0 for p in s["procs"].values())
                    self._bar.set_postfix_str(f"{self.frames} frames, {self.frames / max(t, 1e-9):.1f} fps, "
                                              f"RSS {rss:.0f} MB", refresh=False)
                if now >= self._next_refresh:
                    self._bar.n = round(min(t, self.duration) / 60.0, 3)
                    self._bar.refresh()
                    self._next_refresh = now + self._refresh_s
                if t >= self.duration:
                    self.done.set()
                if now - self.last_result > STALL_S and not self.stalled:
                    self.stalled = True
                    self.done.set()
                # time is up (or stalled) but the main thread gets no result to notice it: wake it
                if self.done.is_set() and now - self.last_result > 5.0 and not self._interrupted_main:
                    self._interrupted_main = True
                    with self.lock:
                        if not self.stop.is_set() and self.wake is not None:
                            self.wake()
        except Exception as e:  # noqa: BLE001 - reported, the run fails
            self.error = f"sampler: {type(e).__name__}: {e}"
            self.done.set()

    def finish(self) -> None:
        with self.lock:
            self.stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self._bar.n = round(min(time.monotonic() - self.t0, self.duration) / 60.0, 3)
        self._bar.close()


# -- signals -------------------------------------------------------------------------------------------

class _Wake(Exception):
    """Raised in the main thread (through a simulated SIGINT) when the sampler finds the run over
    but no result arrives to let the loop notice."""


class _Signals:
    """SIGINT / SIGTERM: while starting, KeyboardInterrupt (the pipeline cleans up); while running,
    the first asks the loop to stop, a second raises KeyboardInterrupt; while closing, ignored
    (closing is bounded by the pipeline's own timeouts). :meth:`wake` (from another thread)
    raises :class:`_Wake` in the main thread."""

    def __init__(self) -> None:
        self.phase = "starting"
        self.received: int | None = None
        self.stop_asked = False
        self._wake = False
        self._old: dict = {}

    def wake(self) -> None:
        import _thread

        if signal.getsignal(signal.SIGINT) is self._handler:
            self._wake = True
            _thread.interrupt_main(signal.SIGINT)  # runs _handler in the main thread

    def install(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)

    def restore(self) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)
        self._old = {}

    def _handler(self, signum, _frame) -> None:
        if self._wake:
            self._wake = False
            if self.phase == "running":
                raise _Wake
            return
        self.received = self.received or signum
        name = signal.Signals(signum).name
        if self.phase == "closing":
            print(f"\nposestream bench soak: {name}: closing the pipeline, please wait", file=sys.stderr, flush=True)
            return
        if self.phase == "running" and not self.stop_asked:
            self.stop_asked = True
            print(f"\nposestream bench soak: {name}: stopping (again to stop at once)", file=sys.stderr, flush=True)
            return
        raise KeyboardInterrupt


# -- report --------------------------------------------------------------------------------------------

def analyse(samples: list[dict], warmup: float, goal_mb: float) -> dict:
    """Per process: RSS at the first sample at or after ``warmup`` s, at the last sample, growth,
    fds first/last and a verdict; plus the rings and private-folder entries, first/last."""
    res = {"procs": {}, "failures": [], "warmup_used_s": None}
    if not samples:
        res["failures"].append("no sample taken")
        return res
    after = [s for s in samples if s["t_s"] >= warmup]
    if len(after) < 2:  # the run was shorter than the warm-up: use all of it, and say so
        after = samples
        res["warmup_note"] = f"fewer than 2 samples after the {warmup:g} s warm-up: growth over the whole run"
    first, last = after[0], after[-1]
    res["warmup_used_s"] = first["t_s"]
    res["first_t_s"], res["last_t_s"] = first["t_s"], last["t_s"]
    names = list(dict.fromkeys(n for s in samples for n in s["procs"]))
    for name in names:
        a, b = first["procs"].get(name) or {}, last["procs"].get(name) or {}
        r0, r1, f0, f1 = a.get("rss_mb"), b.get("rss_mb"), a.get("fds"), b.get("fds")
        growth = None if r0 is None or r1 is None else r1 - r0
        why = []
        if growth is None:
            why.append("gone" if r1 is None else "not sampled")
        elif growth >= goal_mb:
            why.append(f"RSS +{growth:.1f} MB >= {goal_mb:g}")
        if f0 is not None and f1 is not None and f1 > f0 + FLAT_SLACK:
            why.append(f"fds {f0} -> {f1}")
        m0, m1 = a.get("ring_maps"), b.get("ring_maps")
        if m0 is not None and m1 is not None and m1 > m0 + FLAT_SLACK:
            why.append(f"ring mappings {m0} -> {m1}")
        res["procs"][name] = {"rss_first_mb": r0, "rss_last_mb": r1, "growth_mb": growth, "fds_first": f0,
                              "fds_last": f1, "ring_maps_first": m0, "ring_maps_last": m1, "ok": not why,
                              "why": "; ".join(why)}
        if why:
            res["failures"].append(f"{name}: {'; '.join(why)}")
    for key, label in (("shm_pipeline", "shared-memory rings"), ("folder_entries", "private-folder entries")):
        v0, v1 = first.get(key), last.get(key)
        res[key] = {"first": v0, "last": v1}
        if v0 is not None and v1 is not None and v1 > v0 + FLAT_SLACK:
            res["failures"].append(f"{label}: {v0} -> {v1}")
    res["shm_psring"] = {"first": first.get("shm_psring"), "last": last.get("shm_psring")}
    return res


def _fmt(v, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def print_report(out: dict, file=sys.stdout) -> None:
    a = out["analysis"]
    p = lambda *x: print(*x, file=file)  # noqa: E731
    desc = out["model_description"]
    model = desc if desc.startswith(out["model"]) else f"{out['model']} ({desc or 'model'})"
    p(f"soak: {model} on {out['source']}, "
      f"{out['elapsed_s'] / 60:.2f} min, sampled every {out['interval_s']:g} s ({len(out['samples'])} samples)")
    if a.get("warmup_note"):
        p(f"note: {a['warmup_note']}")
    elif a.get("first_t_s") is not None:
        p(f"growth: last sample ({a['last_t_s']:.0f} s) - first after warm-up ({a['first_t_s']:.0f} s; "
          f"warm-up {out['warmup_s']:g} s)")
    p(f"{'process':<11} {'pid':>8} {'RSS first MB':>13} {'last MB':>9} {'growth MB':>10} {'fds first':>10} "
      f"{'last':>5} {'rings':>6}  verdict (goal < {out['goal_mb']:g} MB)")
    pids = out["samples"][-1]["procs"] if out["samples"] else {}
    for name, r in a["procs"].items():
        pid = (pids.get(name) or {}).get("pid")
        g = r["growth_mb"]
        p(f"{name:<11} {_fmt(pid, 'd'):>8} {_fmt(r['rss_first_mb']):>13} {_fmt(r['rss_last_mb']):>9} "
          f"{('-' if g is None else f'{g:+.1f}'):>10} {_fmt(r['fds_first'], 'd'):>10} {_fmt(r['fds_last'], 'd'):>5} "
          f"{_fmt(r['ring_maps_first'], 'd') + '/' + _fmt(r['ring_maps_last'], 'd'):>6}  "
          f"{'ok' if r['ok'] else 'FAIL: ' + r['why']}")
    fps = out["frames"] / out["run_s"] if out["run_s"] > 0 else 0.0
    p(f"frames processed {out['frames']} ({fps:.1f} fps; pipeline: in {_fmt(out['frames_in'], 'd')}, "
      f"out {_fmt(out['frames_out'], 'd')}, dropped {_fmt(out['frames_dropped'], 'd')}, "
      f"loop passes {out['passes']})")
    sp, sg, fe = a.get("shm_pipeline") or {}, a.get("shm_psring") or {}, a.get("folder_entries") or {}
    p(f"/dev/shm rings of this pipeline first/last {_fmt(sp.get('first'), 'd')}/{_fmt(sp.get('last'), 'd')} "
      f"(all psring-* {_fmt(sg.get('first'), 'd')}/{_fmt(sg.get('last'), 'd')}); private-folder entries "
      f"{_fmt(fe.get('first'), 'd')}/{_fmt(fe.get('last'), 'd')}")
    left = out["after_close"]
    p(f"left after close: {left['shm_pipeline']} ring(s) of this pipeline in /dev/shm (all psring-*: "
      f"{left['shm_psring']}), private folder {'still there: ' + str(left['folder']) if left['folder_exists'] else 'gone'}")
    for k in ("record", "jsonl"):
        if out["files"].get(k):
            p(f"{k}: {_fmt(out['files_mb'].get(k), '.1f')} MB ({out['files'][k]}{', removed' if out['files_removed'] else ''})")
    p("(rings: the psring-* files are unlinked once both ends mapped them, so /dev/shm holds none while the "
      "pipeline runs; 'rings' above counts each process's ring mappings, first/last)")
    p(f"cpu flags: {out['cpu_flags']}")
    p(f"command: {out['command']}")
    if out.get("interrupted"):
        p(f"interrupted by {out['interrupted']}: the verdict covers what was sampled")
    if out["failures"]:
        p("FAIL: " + " | ".join(out["failures"]))
    else:
        p(f"{'PASS (so far)' if out.get('interrupted') else 'PASS'}: every process grew < {out['goal_mb']:g} MB after warm-up; fds, rings and folder entries flat; "
          f"nothing left after close")


def plot(out: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = out["samples"]
    t = [s["t_s"] / 60.0 for s in samples]
    names = list(dict.fromkeys(n for s in samples for n in s["procs"]))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    for name in names:
        rss = [(s["procs"].get(name) or {}).get("rss_mb") for s in samples]
        fds = [(s["procs"].get(name) or {}).get("fds") for s in samples]
        ax1.plot(t, [float("nan") if v is None else v for v in rss], marker=".", label=name)
        ax2.plot(t, [float("nan") if v is None else v for v in fds], marker=".", label=name)
    for ax in (ax1, ax2):
        ax.axvline(out["warmup_s"] / 60.0, color="grey", linestyle="--", linewidth=1)
        ax.grid(alpha=0.3)
    ax1.set_ylabel("RSS (MB)")
    ax1.set_title(f"soak: {out['model']} on {os.path.basename(out['source'])} (dashed: end of warm-up)")
    ax1.legend(fontsize=8, ncol=3)
    ax2.set_ylabel("open fds")
    ax2.set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)


# -- the command -----------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from posestream.stream.cli import UserError

    if args.minutes <= 0:
        raise UserError(f"--minutes must be > 0, got {args.minutes:g}")
    if args.interval <= 0:
        raise UserError(f"--interval must be > 0, got {args.interval:g}")
    if args.warmup < 0:
        raise UserError(f"--warmup must be >= 0, got {args.warmup:g}")
    source = Path(args.source) if args.source else (REPO / DEFAULT_SOURCE)
    source = source.resolve()
    if not source.is_file():
        raise UserError(f"{source}: source video not found (give one with --source)")
    for opt in ("json", "plot"):
        path = getattr(args, opt)
        if path and not Path(path).resolve().parent.is_dir():
            raise UserError(f"--{opt} {path}: folder {Path(path).resolve().parent} does not exist")

    import posestream

    if args.out_dir:
        work = Path(args.out_dir).resolve()
        work.mkdir(parents=True, exist_ok=True)
        keep = True
    else:
        work = Path(tempfile.mkdtemp(prefix="posestream-soak-"))
        keep = False
    files = {"record": str(work / "soak.mp4"), "jsonl": str(work / "soak.jsonl")}
    need_mb = MP4_MB_PER_MIN * args.minutes
    free_mb = shutil.disk_usage(work).free / 2**20
    if free_mb < need_mb:
        print(f"posestream bench soak: warning: {free_mb / 1024:.1f} GB free in {work}, the recording may need "
              f"~{need_mb / 1024:.1f} GB ({MP4_MB_PER_MIN:g} MB/min at ~40 fps with lite); see --out-dir",
              file=sys.stderr)
    sig = _Signals()
    sig.install()
    pipe = sampler = None
    summary: dict | None = None
    failures: list[str] = []
    interrupted: str | None = None
    t_run0 = t_run1 = time.monotonic()
    folder = None
    model_desc = ""
    passes: set = set()
    try:
        try:
            pipe = posestream.Pipeline([str(source)], model=args.model, policy="live", record=files["record"],
                                       jsonl=files["jsonl"], config={"source_options": {"file": {"loop": True}}})
            pipe.start()
        except posestream.PipelineError as e:
            if getattr(e, "user", False):
                raise UserError(str(e)) from None
            print(f"posestream bench soak: error: the pipeline did not start: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("posestream bench soak: interrupted while starting (nothing was sampled)", file=sys.stderr)
            return 130
        folder = pipe._sup.folder
        model_desc = (pipe.meta.get("model") or {}).get("description", "") if isinstance(pipe.meta, dict) else ""
        print(f"soak: model {model_desc if model_desc.startswith(args.model) else args.model}, source {source}, "
              f"{args.minutes:g} min, samples every {args.interval:g} s, outputs in {work}", file=sys.stderr)
        sampler = Sampler(pipe, args.interval, args.minutes, files, wake=sig.wake)
        sig.phase = "running"
        sampler.start()
        t_run0 = sampler.t0
        try:
            for r in pipe:
                sampler.frames += 1
                sampler.last_result = time.monotonic()
                passes.add(r.epoch)
                del r
                if sampler.done.is_set() or sig.stop_asked:
                    break
            else:
                failures.append("the pipeline ended by itself (a looping source should not end)")
        except _Wake:
            pass
        except KeyboardInterrupt:
            interrupted = signal.Signals(sig.received or signal.SIGINT).name
        except posestream.PipelineError as e:
            failures.append(f"the pipeline failed: {e}")
        if sig.stop_asked and interrupted is None:
            interrupted = signal.Signals(sig.received or signal.SIGINT).name
        if sampler.stalled:
            failures.append(f"no result for {STALL_S:g} s: the pipeline stalled")
        if sampler.error:
            failures.append(sampler.error)
        t_run1 = time.monotonic()
        sig.phase = "closing"
        sampler.finish()
        try:
            sampler.sample()  # the last one, at the end of the run, before close
        except Exception:  # noqa: BLE001 - the samples taken still count
            pass
    except KeyboardInterrupt:  # a signal between the loop and here (rare): still close and report
        interrupted = interrupted or signal.Signals(sig.received or signal.SIGINT).name
    finally:
        sig.phase = "closing"
        if sampler is not None:
            sampler.finish()
        if pipe is not None:
            try:
                summary = pipe.close()
            except Exception as e:  # noqa: BLE001 - reported, the run fails
                failures.append(f"close: {type(e).__name__}: {e}")
        sig.restore()
    if pipe is None or sampler is None:  # did not start: returned above
        return 1

    from posestream.stream.transport import ring_files

    own_left = len(ring_files(folder)) if folder else 0
    after = {"shm_pipeline": own_left, "shm_psring": shm_entries(), "folder": folder,
             "folder_exists": bool(folder and os.path.exists(folder))}
    if own_left:
        failures.append(f"{own_left} ring file(s) of this pipeline left in /dev/shm after close")
    if after["folder_exists"]:
        failures.append(f"private folder {folder} left after close")
    summary = summary or {}
    if summary.get("failed_stage"):
        failures.append(f"stage failed: {summary['failed_stage']}: {'; '.join(summary.get('errors') or [])}")
    analysis = analyse(sampler.samples, args.warmup, args.goal_mb)
    failures = analysis["failures"] + failures
    files_mb = {k: file_mb(v) for k, v in files.items()}
    out = {
        "command": command_line(), "model": args.model, "model_description": model_desc, "source": str(source),
        "minutes": args.minutes, "interval_s": args.interval, "warmup_s": args.warmup, "goal_mb": args.goal_mb,
        "elapsed_s": t_run1 - t_run0, "run_s": t_run1 - t_run0, "frames": sampler.frames,
        "frames_in": summary.get("frames_in"), "frames_out": summary.get("frames_out"),
        "frames_dropped": summary.get("frames_dropped"), "passes": len(passes),
        "pipeline_fps_out": summary.get("fps_out"), "cpu_flags": cpu_flags(), "interrupted": interrupted,
        "files": files, "files_mb": files_mb, "files_removed": not keep, "after_close": after,
        "samples": sampler.samples, "analysis": analysis, "failures": failures, "ok": not failures,
    }
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    print_report(out)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    if args.plot:
        try:
            plot(out, args.plot)
        except Exception as e:  # noqa: BLE001 - the report matters more than the picture
            print(f"posestream bench soak: the plot failed: {type(e).__name__}: {e}", file=sys.stderr)
            failures.append("plot failed")
    if interrupted:
        return 130
    return 0 if not failures else 1
