"""Bad inputs to the command line, each as a user meets it: a real `posestream` subprocess.

Every case must be refused before the first frame with exit status 2 and one error line, the last
line of stderr, ``"posestream run: error: ..."`` (or ``posestream <cmd>: error:``), naming what
is wrong and where (the file, the key and its line, the flag); no traceback; any other stderr line
is a log line; and no output file asked for is left behind (the checks happen before capture
starts, so a bad model with ``--record out/x.mp4`` leaves no ``out/x.mp4``).

The cases run concurrently (most of their time is interpreter start-up and, for the ones the
pipeline refuses at start-up, waiting for its processes to exit): a module fixture starts the
selected ones at once, bounded, and each test checks its own result.
"""
from __future__ import annotations

import functools
import os
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
RUN = "posestream run: error: "
# the outputs a case asks for (and that must not exist afterwards), as flags and as files
OUT_FLAGS = ["--record", "{out}/x.mp4", "--jsonl", "{out}/x.jsonl", "--summary", "{out}/s.json"]
OUT_FILES = ("out/x.mp4", "out/x.jsonl", "out/s.json")


@dataclass
class Case:
    id: str
    args: list                 # after `posestream`; {clip} {tmp} {out} {port} {case} are filled in
    needles: tuple             # substrings of the error line
    left: tuple = OUT_FILES    # files (relative to the case's folder) that must not exist afterwards
    prefix: str = RUN
    max_s: float | None = None  # the subprocess's wall time must stay below this (bounded, not forever:
    #                             the few-seconds bound of the source itself is asserted in test_sources)
    skip_if: str | None = None  # a condition checked in the fixture: "cuda", "video9"
    starts: bool = False       # refused by the started pipeline (source, model): seconds of processes


def run_case(*args, extra=("--model", "lite")):
    """`posestream run --source ... --model lite <outputs> <args> --quiet`: the case's own flags come
    after the outputs, so that one of them (``--record``) replaces the default one."""
    return ["run", *args[:2], *extra, *OUT_FLAGS, *args[2:], "--quiet"]


def src(spec, *args, extra=("--model", "lite")):
    return run_case("--source", spec, *args, extra=extra)


CASES = [
    # ---- sources ------------------------------------------------------------------------------
    Case("empty-source-name", src(""), ("empty source name",)),
    Case("missing-source", src("{tmp}/no/such/video.mp4"), ("no/such/video.mp4: file not found",)),
    Case("text-file-as-video", src("{tmp}/notes.txt"), ("notes.txt: not a video",), starts=True),
    Case("empty-file", src("{tmp}/empty.mp4"), ("empty.mp4: not a video",), starts=True),
    Case("folder-without-images", src("{tmp}/noimages"), ("noimages: no images",), starts=True),
    Case("glob-matching-nothing", src("{tmp}/frames/*.png"), ("frames/*.png: no images",), starts=True),
    # default RTSP settings: an unreachable camera fails after its start-up attempts, within seconds
    Case("rtsp-unreachable", src("rtsp://127.0.0.1:{port}/x"),
         ("rtsp://127.0.0.1:{port}/x: unreachable after 3 attempts",), max_s=90, starts=True),
    Case("rtsp-unresolvable-host", src("rtsp://nonexistent.invalid/x"),
         ("rtsp://nonexistent.invalid/x: unreachable after 3 attempts", "cannot resolve host nonexistent.invalid"),
         max_s=90, starts=True),
    Case("webcam-missing", src("9"), ("9: cannot open camera",), skip_if="video9", starts=True),
    Case("source-overwritten-by-output", ["run", "--source", "{case}/clip.mp4", "--record", "{case}/clip.mp4",
                                          "--model", "lite", "--quiet"],
         ("clip.mp4: would be overwritten by --record",), left=()),
    # ---- outputs ------------------------------------------------------------------------------
    Case("record-into-folder", src("{clip}", "--record", "{tmp}/afolder"),
         ("--record {tmp}/afolder: is a folder",)),
    Case("record-under-a-file", src("{clip}", "--record", "{tmp}/plainfile/x.mp4"),
         ("--record {tmp}/plainfile/x.mp4: cannot create its folder {tmp}/plainfile",)),
    Case("record-under-etc-hostname", src("{clip}", "--record", "/etc/hostname/x.mp4"),
         ("--record /etc/hostname/x.mp4: cannot create its folder /etc/hostname",), skip_if="no-etc-hostname"),
    Case("record-into-proc", src("{clip}", "--record", "/proc/posestream-test/x.mp4"),
         ("--record /proc/posestream-test/x.mp4: cannot",)),
    Case("jsonl-into-folder", src("{clip}", "--jsonl", "{tmp}/afolder"), ("--jsonl {tmp}/afolder: is a folder",)),
    Case("summary-into-folder", src("{clip}", "--summary", "{tmp}/afolder"),
         ("--summary {tmp}/afolder: is a folder",)),
    Case("record-and-jsonl-same-path", ["run", "--source", "{clip}", "--model", "lite", "--record", "{out}/same",
                                        "--jsonl", "{out}/same", "--quiet"],
         ("--record and --jsonl both write {out}/same",), left=("out/same",)),
    # ---- inference ----------------------------------------------------------------------------
    Case("input-size-0", src("{clip}", "--input-size", "0"), ("--input-size: must be an integer in 32..4096", "got 0")),
    Case("input-size-negative", src("{clip}", "--input-size", "-32"), ("--input-size:", "got -32")),
    Case("input-size-huge", src("{clip}", "--input-size", "100000"), ("--input-size:", "got 100000")),
    Case("jsonl-empty-name", src("{clip}", "--jsonl", ""), ("--jsonl '': not a file name",)),
    Case("model-empty-name", src("{clip}", extra=("--model", "")), ("--model: must be a name or a path",)),
    Case("model-missing", src("{clip}", extra=("--model", "{tmp}/missing.pt")), ("missing.pt: model file not found",)),
    Case("model-garbage-pt", src("{clip}", extra=("--model", "{tmp}/garbage.pt")),
         ("{tmp}/garbage.pt: not a readable checkpoint",), starts=True),
    Case("model-other-architecture", src("{clip}", extra=("--model", "{tmp}/wrongarch.pt")),
         ("{tmp}/wrongarch.pt: weights do not fit model 'movenet_paf'", "missing tensors"), starts=True),
    Case("model-unknown-arch-in-checkpoint", src("{clip}", extra=("--model", "{tmp}/unknownarch.pt")),
         ("{tmp}/unknownarch.pt: unknown model 'resnet9000'",), starts=True),
    Case("model-bad-arch-kwargs", src("{clip}", extra=("--model", "{tmp}/badkwargs.pt")),
         ("{tmp}/badkwargs.pt: not a usable checkpoint", "bogus"), starts=True),
    Case("model-without-skeleton", src("{clip}", extra=("--model", "{tmp}/noskeleton.pt")),
         ("{tmp}/noskeleton.pt: the model metadata lacks skeleton",), starts=True),
    Case("model-garbage-onnx", src("{clip}", extra=("--model", "{tmp}/garbage.onnx")),
         ("{tmp}/garbage.onnx: not a readable ONNX model",), starts=True),
    Case("model-unknown-name", src("{clip}", extra=("--model", "nosuchnet")),
         ("nosuchnet: not a checkpoint, ONNX file or registered model", "lite")),
    Case("torch-backend-with-onnx", src("{clip}", "--backend", "torch", extra=("--model", "{tmp}/garbage.onnx")),
         ("garbage.onnx: the torch backend needs a checkpoint or model name",)),
    Case("device-cuda-without-gpu", src("{clip}", "--device", "cuda"), ("--device cuda: no CUDA device",),
         skip_if="cuda"),
    Case("fp16-without-torch", src("{clip}", "--fp16"), ("--fp16 needs the torch backend",)),
    # ---- config files -------------------------------------------------------------------------
    Case("config-missing", src("{clip}", "--config", "{tmp}/missing.yaml"), ("missing.yaml: config file not found",)),
    Case("config-is-a-folder", src("{clip}", "--config", "{tmp}/afolder"), ("afolder: is a directory",)),
    Case("yaml-syntax-error", src("{clip}", "--config", "{tmp}/syntax.yaml"), ("syntax.yaml:4: YAML syntax error",)),
    Case("yaml-tab", src("{clip}", "--config", "{tmp}/tab.yaml"), ("tab.yaml:2: YAML syntax error",)),
    Case("yaml-binary", src("{clip}", "--config", "{tmp}/binary.yaml"), ("binary.yaml", "YAML")),
    Case("yaml-top-level-list", src("{clip}", "--config", "{tmp}/list.yaml"),
         ("list.yaml:1: the top level must be a mapping",)),
    Case("yaml-unknown-top-level-key", src("{clip}", "--config", "{tmp}/topkey.yaml"),
         ("topkey.yaml:3: bogus: unknown pipeline option 'bogus'",)),
    Case("yaml-unknown-infer-key", src("{clip}", "--config", "{tmp}/modle.yaml"),
         ("modle.yaml:3: infer.modle: unknown infer option 'modle'",)),
    Case("yaml-wrong-type", src("{clip}", "--config", "{tmp}/mintype.yaml"),
         ("mintype.yaml:3: track.min_oks: expected a number, got 'high'",)),
    Case("yaml-out-of-range", src("{clip}", "--config", "{tmp}/minrange.yaml"),
         ("minrange.yaml:2: track.min_oks: must be in [0, 1], got 1.5",)),
    Case("yaml-section-not-a-mapping", src("{clip}", "--config", "{tmp}/sectionlist.yaml"),
         ("sectionlist.yaml:1: infer: expected a mapping",)),
    Case("yaml-bad-policy", src("{clip}", "--config", "{tmp}/policy.yaml"),
         ("policy.yaml:2: policy: must be auto, live or lossless, got 'sideways'",)),
    Case("yaml-unknown-source-kind", src("{clip}", "--config", "{tmp}/kind.yaml"),
         ("kind.yaml:2: source_options.floppy: unknown source kind 'floppy'",)),
    Case("yaml-unknown-rtsp-option", src("{clip}", "--config", "{tmp}/rtspopt.yaml"),
         ("rtspopt.yaml:3: source_options.rtsp.timeout_s: unknown rtsp source option 'timeout_s'",)),
    Case("yaml-bad-rtsp-value", src("{clip}", "--config", "{tmp}/rtspval.yaml"),
         ("rtspval.yaml:3: source_options.rtsp.start_attempts: must be an integer >= 1, got 0",)),
    Case("yaml-rtsp-not-a-mapping", src("{clip}", "--config", "{tmp}/rtspscalar.yaml"),
         ("rtspscalar.yaml:2: source_options.rtsp: expected a mapping of rtsp source options",)),
    Case("yaml-bad-decoder-value", src("{clip}", "--config", "{tmp}/decoder.yaml"),
         ("decoder.yaml:3: infer.decoder.working_stride: must be > 0, got 0",)),
    Case("yaml-unknown-decoder-key", src("{clip}", "--config", "{tmp}/decoderkey.yaml"),
         ("decoderkey.yaml:3: infer.decoder.nope: unknown decoder option 'nope'",)),
    # ---- --set and flags ----------------------------------------------------------------------
    Case("set-bad-value", src("{clip}", "--set", "track.min_oks=abc"),
         ("--set track.min_oks=abc: expected a number, got 'abc'",)),
    Case("set-out-of-range", src("{clip}", "--set", "track.min_oks=1.5"), ("--set track.min_oks=1.5: must be in [0, 1]",)),
    Case("set-unknown-key", src("{clip}", "--set", "nosection=1"), ("--set nosection=1: unknown pipeline option",)),
    Case("set-no-equals", src("{clip}", "--set", "track.min_oks"), ("--set 'track.min_oks': expected KEY=VALUE",)),
    Case("set-overrides-config-line", src("{clip}", "--config", "{tmp}/minrange.yaml", "--set", "track.min_oks=2"),
         ("--set track.min_oks=2: must be in [0, 1], got 2",)),
    Case("policy-bad-choice", src("{clip}", "--policy", "sideways"),
         ("argument --policy: invalid choice: 'sideways'", "see posestream run --help")),
    Case("input-size-not-a-number", src("{clip}", "--input-size", "abc"), ("argument --input-size: invalid int value",)),
    Case("stop-timeout-negative", src("{clip}", "--stop-timeout", "-1"),
         ("--stop-timeout: must be a number of seconds in [0, 86400], got -1",)),
    Case("no-source", ["run", "--model", "lite", *OUT_FLAGS], ("the following arguments are required: --source",)),
    # ---- other commands -----------------------------------------------------------------------
    Case("unknown-command", ["fly"], ("argument COMMAND: invalid choice: 'fly'",), left=(), prefix="posestream: error: "),
    Case("export-missing-checkpoint", ["export", "{tmp}/missing.pt", "--out", "{out}/m.onnx"],
         ("missing.pt: checkpoint not found",), left=("out/m.onnx",), prefix="posestream export: error: "),
    Case("export-unknown-model", ["export", "nosuchnet", "--out", "{out}/m.onnx"],
         ("nosuchnet: neither a checkpoint file nor a registered model",), left=("out/m.onnx",),
         prefix="posestream export: error: "),
]

YAML = {
    "syntax.yaml": "infer:\n  model: lite\n  backend: [torch\ntrack: {}\n",
    "tab.yaml": "infer:\n\tmodel: lite\n",
    "list.yaml": "- infer\n- track\n",
    "topkey.yaml": "infer:\n  model: lite\nbogus: 1\n",
    "modle.yaml": "# a comment\ninfer:\n  modle: lite\n",
    "mintype.yaml": "track:\n  max_age_s: 5\n  min_oks: high\n",
    "minrange.yaml": "track:\n  min_oks: 1.5\n",
    "sectionlist.yaml": "infer:\n  - model\n",
    "policy.yaml": "# flow\npolicy: sideways\n",
    "kind.yaml": "source_options:\n  floppy: {}\n",
    "rtspopt.yaml": "source_options:\n  rtsp:\n    timeout_s: 3\n",
    "rtspval.yaml": "source_options:\n  rtsp:\n    start_attempts: 0\n",
    "rtspscalar.yaml": "source_options:\n  rtsp: 3\n",
    "decoder.yaml": "infer:\n  decoder:\n    working_stride: 0\n",
    "decoderkey.yaml": "infer:\n  decoder:\n    nope: 1\n",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clip(path: Path, n: int = 5, size=(160, 120), fps: int = 10) -> Path:
    rng = np.random.default_rng(0)
    with av.open(str(path), "w") as out:
        st = out.add_stream("libx264", rate=fps)
        st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
        for _ in range(n):
            img = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def _checkpoints(tmp: Path) -> None:
    """A real lite checkpoint, then variants whose loading must fail."""
    import torch

    from posestream.models.checkpoint import save_checkpoint
    from posestream.models.registry import build_model

    torch.manual_seed(0)
    good = save_checkpoint(tmp / "lite.pt", build_model("lite", width=32).eval())
    payload = torch.load(good, weights_only=True)

    def variant(name, **meta):
        m = {k: v for k, v in {**payload["meta"], **meta}.items() if v is not None}
        torch.save({**payload, "meta": m}, tmp / name)

    variant("wrongarch.pt", arch="movenet_paf", arch_kwargs={})  # another architecture: its weights do not fit
    variant("unknownarch.pt", arch="resnet9000")
    variant("badkwargs.pt", arch_kwargs={"bogus": 1})
    variant("noskeleton.pt", skeleton=None)


@functools.lru_cache(maxsize=None)
def _skip_reason(cond: str | None) -> str | None:
    if cond == "video9" and os.path.exists("/dev/video9"):
        return "this machine has a /dev/video9"
    if cond == "no-etc-hostname" and not os.path.isfile("/etc/hostname"):
        return "no /etc/hostname here"
    if cond == "cuda" and (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/dxg")):
        from posestream.stream.infer import cuda_available

        if cuda_available("auto"):
            return "a CUDA device is available here"
    return None


@pytest.fixture(scope="module")
def setup():
    # a private folder, not pytest's numbered tmp folders: another pytest session of this user
    # running at the same time prunes those (it keeps the last 3) while this module still runs
    with tempfile.TemporaryDirectory(prefix="posestream-bad-inputs-") as d:
        yield _make_files(Path(d))


def _make_files(tmp: Path) -> dict:
    clip = _clip(tmp / "clip.mp4")
    (tmp / "notes.txt").write_text("not a video\n" * 10)
    (tmp / "empty.mp4").write_bytes(b"")
    (tmp / "noimages").mkdir()
    (tmp / "noimages" / "readme.txt").write_text("no images here\n")
    (tmp / "frames").mkdir()
    (tmp / "afolder").mkdir()
    (tmp / "plainfile").write_text("a regular file\n")
    rng = np.random.default_rng(1)
    (tmp / "garbage.pt").write_bytes(rng.integers(0, 256, 512, dtype=np.uint8).tobytes())
    (tmp / "garbage.onnx").write_bytes(rng.integers(0, 256, 512, dtype=np.uint8).tobytes())
    (tmp / "binary.yaml").write_bytes(b"\x00\x01\x02infer: {}\n")
    for name, text in YAML.items():
        (tmp / name).write_text(text)
    _checkpoints(tmp)
    return {"tmp": str(tmp), "clip": str(clip)}


def _fill(s: str, subst: dict) -> str:
    for k, v in subst.items():
        s = s.replace("{" + k + "}", v)
    return s


@dataclass
class Result:
    returncode: int | None    # None: killed after the timeout
    stdout: str
    stderr: str
    wall_s: float
    folder: Path
    subst: dict


def _run(case: Case, setup: dict) -> Result:
    folder = Path(setup["tmp"]) / "cases" / case.id
    folder.mkdir(parents=True)
    subst = {**setup, "case": str(folder), "out": str(folder / "out"), "port": str(_free_port())}
    if case.id == "source-overwritten-by-output":
        _clip(folder / "clip.mp4", n=2)
    argv = [_fill(a, subst) for a in case.args]
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "posestream", *argv], capture_output=True, text=True,
                           timeout=180, cwd=REPO)
        code, stdout, stderr = r.returncode, r.stdout, r.stderr
    except subprocess.TimeoutExpired as e:  # this case fails, not the whole module
        code, stdout = None, str(e.stdout or "")
        stderr = f"{e.stderr or ''}\n(test: still running after {e.timeout} s, killed)"
    res = Result(code, stdout, stderr, time.monotonic() - t0, folder, subst)
    if os.environ.get("POSESTREAM_TEST_TIMES"):
        last = (stderr.strip().splitlines() or [""])[-1]
        print(f"{case.id}: {res.wall_s:.1f} s, exit {code}: {last}", file=sys.stderr)
    return res


@pytest.fixture(scope="module")
def results(request, setup):
    """Every selected case of this module, run concurrently (bounded): {case id: Result}."""
    wanted = [item.callspec.params["case"] for item in request.session.items
              if item.module is request.module and hasattr(item, "callspec") and "case" in item.callspec.params]
    todo = [c for c in wanted if _skip_reason(c.skip_if) is None]
    # first the timed cases beside the light ones (refused in the command's own process), so that
    # what is timed is the pipeline and not this module's load; then the rest of the ones that a
    # started pipeline refuses (5 processes each, mostly waiting for them to exit)
    first = [c for c in todo if c.max_s is not None or not c.starts]
    first.sort(key=lambda c: c.max_s is None)
    then = [c for c in todo if c not in first]
    out = {}
    for cases, workers in ((first, 4), (then, 6)):
        with ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {c.id: pool.submit(_run, c, setup) for c in cases}
            out.update({k: f.result() for k, f in futures.items()})
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_is_refused_in_one_line_leaving_nothing(case, results):
    reason = _skip_reason(case.skip_if)
    if reason:
        pytest.skip(reason)
    r = results[case.id]
    err = r.stderr.strip()
    assert r.returncode == 2, (r.returncode, err[-2000:])
    assert "Traceback" not in r.stderr, err[-3000:]
    lines = err.splitlines()
    assert lines, "no error message"
    last = lines[-1]
    assert last.startswith(case.prefix), err[-2000:]
    for needle in case.needles:
        assert _fill(needle, r.subst) in last, (needle, last)
    others = [x for x in lines[:-1] if x.strip()]
    assert all(" WARNING " in x or " INFO " in x for x in others), err[-2000:]
    for rel in case.left:
        assert not (r.folder / rel).exists(), f"{rel} was left behind"
    if case.max_s is not None:
        assert r.wall_s < case.max_s, r.wall_s


def test_the_table_is_wide():
    assert len(CASES) >= 30 and len({c.id for c in CASES}) == len(CASES)
