"""Run the pose pipeline on cameras, RTSP streams, video files or image folders.

Separate processes (capture per source, inference, tracking + smoothing, output) linked by
ZeroMQ. Live sources (webcam index or /dev/videoN, rtsp://) use the "live" flow policy: only the
newest frame is processed, stale ones are dropped and counted, so latency does not build up.
Files and folders use "lossless": every frame reaches the outputs, in order.

Everything is checked before the first frame: sources open (an unreachable camera fails after a
few seconds: source_options.rtsp.start_attempts), the model loads, every output path can be
written (missing folders are created). A camera lost later is retried with backoff while the
other sources go on (counted in the summary, with its outage time).

Stopping: Ctrl-C (SIGINT), SIGTERM (systemctl stop, docker stop) and SIGHUP (terminal closed)
stop capture and finish the frames in flight; the recording is always finalised and playable. A
second signal stops at once (still finalising the recording).

  posestream run --source data/vtest.avi --record out/demo.mp4 --jsonl out/demo.jsonl
  posestream run --source 0 --show
  posestream run --source rtsp://127.0.0.1:8554/cam --source rtsp://127.0.0.1:8554/cam2 --record out/cams.mp4
  posestream run --source clip.mp4 --config configs/pipeline.yaml --set track.min_oks=0.4

Exit status: 0 done, 1 a stage failed (recording finalised), 2 bad input (one-line error, before
the first frame), 128 + signal when stopped by one (130 SIGINT, 143 SIGTERM, 129 SIGHUP).
"""
from __future__ import annotations

import argparse
import json
import sys

FLAGS = {("sink", "serve"): "--serve", ("sink", "publish"): "--publish", ("sink", "stream"): "--stream",
         ("infer", "model"): "--model", ("infer", "backend"): "--backend", ("infer", "precision"): "--precision",
         ("infer", "device"): "--device",
         ("infer", "input_size"): "--input-size", ("infer", "fp16"): "--fp16", ("sink", "record"): "--record",
         ("sink", "jsonl"): "--jsonl", ("sink", "show"): "--show", ("policy",): "--policy",
         ("summary",): "--summary", ("stop_timeout",): "--stop-timeout", ("refine", "enabled"): "--refine",
         ("workers",): "--workers", ("batch",): "--batch", ("batch_timeout_ms",): "--batch-timeout-ms",
         ("listen",): "--listen", ("keys",): "--keys"}

# --preset: settings applied under everything else (config file, --set, flags)
PRESETS = {"fast": {"infer": {"input_size": 256}},
           "balanced": {"infer": {"input_size": 320}},
           "accurate": {"infer": {"input_size": 320}, "refine": {"enabled": True}}}
# fast where this CPU runs INT8 (x86 with AVX2 or VNNI) and the model has shipped INT8 ranges (the
# default model): 320 px with the backbone in INT8 is both faster and more accurate than 256 in fp32
# (measured on an AVX2 EPYC: forward 19.9 against 22.0 ms, held-out AP 0.288 against 0.255)
# (int8_fallback: if the local export's weights do not match the shipped ranges, precision auto)
FAST_INT8 = {"infer": {"input_size": 320, "precision": "int8", "int8_fallback": True}}


def preset_settings(name: str | None, model: str | None = None, backend: str | None = None,
                    precision: str | None = None, device: str | None = None) -> dict:
    """The settings of ``--preset name`` on this host, for ``model`` (None: the default model) and
    the backend, precision and device given elsewhere (a precision other than INT8, the torch
    backend or CUDA keep ``fast`` at 256 px)."""
    if (name == "fast" and model in (None, "default") and backend in (None, "auto", "onnxruntime", "openvino")
            and precision in (None, "auto", "int8") and device != "cuda"):
        from posestream.models.quantize import shipped_ranges
        from posestream.models.shipped import SHIPPED_CHECKPOINT

        from .backends import _int8_cpu, cpu_flags

        if _int8_cpu(cpu_flags()) and shipped_ranges(arch=SHIPPED_CHECKPOINT.stem) is not None:
            return FAST_INT8
    return PRESETS.get(name, {})


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", required=True,
                   help="video file, image folder/glob, webcam index (0) or /dev/videoN, or rtsp:// URL; "
                        "repeat for several")
    p.add_argument("--model", default=None,
                   help="checkpoint (.pt), ONNX file or registered model name (random weights, for tests); "
                        "default: the shipped trained model, models/weights/movenet_paf.pt")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "openvino", "torch"), default=None,
                   help="inference runtime; auto (default): on a CPU the fastest of ONNX Runtime and OpenVINO on "
                        "this host, measured at first use and cached; on CUDA, ONNX Runtime's CUDA provider")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "bf16-mixed", "int8"), default=None,
                   help="auto (default): fp32 unless a reduced precision's AP was measured within 0.005 of fp32 "
                        "(posestream bench backends --ap); bf16: OpenVINO on CPUs with bf16 arithmetic; bf16-mixed: "
                        "the backbone in bf16, the rest in fp32; int8: "
                        "the backbone in INT8 and the rest in fp32 (7-bit weights on CPUs without VNNI)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--fp16", action="store_true", help="half precision (PyTorch on CUDA)")
    p.add_argument("--input-size", type=int, default=None, metavar="PX",
                   help="network input long side in pixels (32..4096; default: the model's)")
    p.add_argument("--refine", action="store_true",
                   help="accurate mode: refine every person found with MoveNet Thunder (top-down, one 256-px crop "
                        "per person; on live sources at most refine.live_max_people per frame, the largest first)")
    p.add_argument("--preset", choices=tuple(PRESETS), default=None,
                   help="fast (320 with the backbone in INT8 on x86 CPUs for the default model, else input 256), "
                        "balanced (320, the default) or accurate (320 + --refine); "
                        "the config file, --set and other flags override it")
    p.add_argument("--record", default=None, help="write an H.264 MP4 with the overlay (folders are created)")
    p.add_argument("--jsonl", default=None, help="write keypoints, one JSON line per frame")
    p.add_argument("--show", action="store_true", help="show a window with the overlay (needs a GUI OpenCV)")
    p.add_argument("--serve", default=None, metavar="[HOST:]PORT",
                   help="live view in a browser at http://HOST:PORT/ (host 127.0.0.1 unless given; another "
                        "host gets an access token, printed in the URL; $POSESTREAM_SERVE_TOKEN sets it)")
    p.add_argument("--open", action="store_true", help="open the --serve page in the default browser")
    p.add_argument("--publish", default=None, metavar="ADDRESS",
                   help="publish every frame's JSON on a ZeroMQ PUB socket, e.g. tcp://127.0.0.1:5555 "
                        "(topic: the source id; read it with `posestream listen ADDRESS`)")
    p.add_argument("--stream", action="append", default=None, metavar="URL",
                   help="push the annotated H.264 to a media server: rtsp://HOST:PORT/PATH or rtmp://...; "
                        "repeatable; {source} in the URL: one push per source")
    p.add_argument("--no-hud", action="store_true", help="no fps/latency overlay")
    p.add_argument("--policy", choices=("auto", "live", "lossless"), default=None,
                   help="flow policy (default auto: live for cameras, lossless for files)")
    p.add_argument("--config", default=None, help="pipeline YAML (sections: policy, infer, track, render, sink, "
                                                  "source_options, ...); flags override it")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override one config value, e.g. track.min_oks=0.4 (YAML value syntax); repeatable")
    p.add_argument("--summary", default=None, help="write the JSON summary here (it is also printed)")
    p.add_argument("--realtime", action="store_true", help="read files at their own pace, like a camera")
    p.add_argument("--stop-timeout", type=float, default=None, metavar="S",
                   help="on a stop signal, drain the frames in flight for at most S seconds (default 5)")
    p.add_argument("--workers", type=int, default=None, metavar="N",
                   help="inference processes fed from one queue (ZeroMQ load balancing; default 1); frames "
                        "reach tracking in their order (lossless) or newest first (live); config key: workers")
    p.add_argument("--batch", type=int, default=None, metavar="B",
                   help="an inference worker runs up to B ready frames, of any sources, in one forward call "
                        "(several cameras; default 1); config key: batch")
    p.add_argument("--batch-timeout-ms", type=float, default=None, metavar="MS",
                   help="with --batch: wait at most MS milliseconds after a batch's first frame for the others "
                        "(default 10), so no camera is delayed more; config key: batch_timeout_ms")
    p.add_argument("--listen", default=None, metavar="tcp://HOST:PORT",
                   help="accept remote inference workers (posestream worker --connect) on this address; their "
                        "results come back on PORT+1; CurveZMQ, needs --keys; nothing listens unless given "
                        "(use 127.0.0.1 or the one interface the workers reach); config key: listen")
    p.add_argument("--keys", default=None, metavar="DIR",
                   help="with --listen: the keys folder made by `posestream keys DIR` (server.key_secret, "
                        "authorized/*.key: the workers accepted); config key: keys")
    p.add_argument("--quiet", action="store_true", help="no status line")
    p.add_argument("--infer-delay-ms", type=float, default=None, help=argparse.SUPPRESS)  # tests of the live policy


def _fail(msg: str, code: int = 2) -> int:
    print(f"posestream run: error: {msg}", file=sys.stderr)
    return code


def _set_value(d: dict, item: str) -> tuple:
    import yaml

    from posestream.models.config import ConfigError

    key, sep, raw = item.partition("=")
    path = tuple(p for p in key.strip().split("."))
    if not sep or not all(path):
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. track.min_oks=0.4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = d
    for p in path[:-1]:
        child = node.get(p)
        if child is None:
            child = node[p] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(path[:-1])} is not a section", path)
        node = child
    node[path[-1]] = value
    return path


def build_config(args: argparse.Namespace, origin: dict | None = None, locs=None):
    """-> (PipelineConfig, origin, locations): ``origin`` maps a config key path to the flag or
    ``--set`` item that set it, ``locations`` (:class:`Locations`) to its line in ``--config``; both
    say where a bad value came from in an error. Pass ``origin`` (a dict) and ``locs`` (a
    ``Locations``) to have them filled in place, so they are known also when this raises."""
    from posestream.models.config import ConfigError, Locations, load_yaml

    from .pipeline import PipelineConfig

    d: dict = {}
    origin = {} if origin is None else origin
    locs = Locations() if locs is None else locs
    if args.config:
        d, found = load_yaml(args.config)
        locs.update(found)
    for item in args.set:
        origin[_set_value(d, item)] = f"--set {item}"
    infer0 = d.get("infer") if isinstance(d.get("infer"), dict) else {}
    preset = preset_settings(getattr(args, "preset", None), args.model or infer0.get("model"),
                             args.backend or infer0.get("backend"), args.precision or infer0.get("precision"),
                             args.device or infer0.get("device"))
    for section, values in preset.items():
        node = d.get(section) if isinstance(d.get(section), dict) else {}
        for key, val in values.items():
            if key not in node:
                node = {**node, key: val}
                origin[(section, key)] = f"--preset {args.preset}"
        d[section] = node
    cfg_dict = dict(d)
    for key in ("infer", "refine", "track", "render", "sink", "source_options"):
        if cfg_dict.get(key) is None:
            cfg_dict.pop(key, None)
    cfg = PipelineConfig.from_dict(cfg_dict)
    cfg.sources = list(args.source)
    infer = dict(cfg.infer)
    for key, val in (("model", args.model), ("backend", args.backend), ("precision", args.precision),
                     ("device", args.device),
                     ("input_size", args.input_size), ("slow_ms", args.infer_delay_ms)):
        if val is not None:
            infer[key] = val
            origin[("infer", key)] = FLAGS.get(("infer", key), key)
    if args.fp16:
        infer["fp16"] = True
        origin[("infer", "fp16")] = "--fp16"
    cfg.infer = infer
    if getattr(args, "refine", False):
        cfg.refine = {**(cfg.refine or {}), "enabled": True}
        origin[("refine", "enabled")] = "--refine"
    sink = dict(cfg.sink)
    for key, val in (("record", args.record), ("jsonl", args.jsonl)):
        if val is not None:
            sink[key] = val
            origin[("sink", key)] = FLAGS[("sink", key)]
    if args.show:
        sink["show"] = True
        origin[("sink", "show")] = "--show"
    for key, val in (("serve", args.serve), ("publish", args.publish), ("stream", args.stream)):
        if val is not None:
            sink[key] = val
            origin[("sink", key)] = FLAGS[("sink", key)]
    cfg.sink = sink
    if args.no_hud:
        cfg.render = {**cfg.render, "hud": False}
    if args.policy:
        cfg.policy = args.policy
    if args.realtime:
        opts = dict(cfg.source_options or {})
        opts["file"] = {**(opts.get("file") or {}), "realtime": True}
        cfg.source_options = opts
    if args.summary:
        cfg.summary = args.summary
    if args.stop_timeout is not None:
        cfg.stop_timeout = args.stop_timeout
        origin[("stop_timeout",)] = "--stop-timeout"
    if args.quiet:
        cfg.status_interval = 0
    if getattr(args, "workers", None) is not None:
        cfg.workers = args.workers
        origin[("workers",)] = "--workers"
    for name in ("listen", "keys"):
        if getattr(args, name, None) is not None:
            setattr(cfg, name, getattr(args, name))
            origin[(name,)] = f"--{name}"
    if getattr(args, "batch", None) is not None:
        cfg.batch = args.batch
        origin[("batch",)] = "--batch"
    if getattr(args, "batch_timeout_ms", None) is not None:
        cfg.batch_timeout_ms = args.batch_timeout_ms
        origin[("batch_timeout_ms",)] = "--batch-timeout-ms"
    try:
        cfg.__post_init__()  # the flags' values go through the same checks
    except ConfigError:
        raise
    except ValueError as e:  # attributed to its key, so that the message names the flag that set it
        from posestream.models.config import _field_of, _without_name

        msg = str(e)
        name = _field_of(msg, [f for f in vars(cfg)])
        if name is None:
            raise
        raise ConfigError(msg, (name,), _without_name(msg, name)) from None
    return cfg, origin, locs


def _config_message(e, origin: dict, locs, file) -> str:
    from posestream.models.config import locate

    path = tuple(getattr(e, "path", ()) or ())
    detail = getattr(e, "detail", None) or str(e)
    for n in range(len(path), 0, -1):
        if path[:n] in origin:
            return f"{origin[path[:n]]}: {detail}"
    if file and path:
        return locate(e, locs, file)
    return str(e)


def _open_browser(meta: dict) -> None:
    """The view's page in the default browser; on a machine without one, the URL is what is left."""
    import webbrowser

    url = (meta.get("web") or {}).get("url")
    if not url:
        return
    try:
        webbrowser.get()
    except webbrowser.Error:
        print(f"posestream: no browser here; open {url}", file=sys.stderr, flush=True)
        return
    if not webbrowser.open(url):
        print(f"posestream: could not start a browser; open {url}", file=sys.stderr, flush=True)


def _write_summary(path, summary: dict) -> None:
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(summary, indent=2))


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import logging

    from posestream.models.config import ConfigError, Locations

    from .pipeline import PipelineError, Supervisor, validate_config

    origin, locs = {}, Locations()
    try:
        cfg, origin, locs = build_config(args, origin, locs)
        validate_config(cfg)
    except ConfigError as e:
        return _fail(" ".join(_config_message(e, origin, locs, args.config).split()))
    except ValueError as e:
        return _fail(" ".join(str(e).split()))
    level = logging.getLogger().getEffectiveLevel()
    # the summary file is written here, once the run has started: a run refused at start-up
    # (bad source, model) leaves no file behind, like the other outputs
    summary_path = cfg.summary
    if args.open and cfg.sink.get("serve") is None:
        return _fail("--open needs --serve [HOST:]PORT")
    sup = Supervisor(dataclasses.replace(cfg, summary=None), log_level=level,
                     on_ready=_open_browser if args.open else None)
    try:
        summary = sup.run()
    except PipelineError as e:
        if sup.signal is not None:
            import signal

            return _fail(f"stopped by {signal.Signals(sup.signal).name} while starting", 128 + int(sup.signal))
        return _fail(" ".join(str(e).split()), 2 if e.user else 1)
    if summary_path:
        try:
            _write_summary(summary_path, summary)
        except OSError as e:
            print(json.dumps(summary, indent=2))
            return _fail(f"--summary {summary_path}: cannot be written ({e.strerror or e})", 1)
    print(json.dumps(summary, indent=2))
    if summary["failed_stage"] or any(e.startswith("output ") for e in summary["errors"]):
        return _fail(" ".join("; ".join(summary["errors"]).split()), 1)
    user_errors = [e for e in summary["errors"] if not e.startswith(("stage ", "infer:", "track:", "output:"))]
    if user_errors and summary["frames_out"] == 0 and sup.signal is None:
        return _fail(" ".join(user_errors[0].split()))
    if sup.signal is not None:
        return 128 + int(sup.signal)
    if summary["interrupted"]:
        return 130
    return 0
