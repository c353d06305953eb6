"""Run the pose pipeline on cameras, RTSP streams, video files or image folders.

Separate processes (capture per source, inference, tracking + smoothing, output) linked by
ZeroMQ. Live sources (webcam index, rtsp://) use the "live" flow policy: only the newest frame is
processed, stale ones are dropped and counted, so latency does not build up. Files and folders
use "lossless": every frame reaches the outputs, in order. Ctrl-C stops capture and finishes the
frames in flight; the recording is always finalised and playable.

  posestream run --source data/vtest.avi --record out/demo.mp4 --jsonl out/demo.jsonl
  posestream run --source 0 --show
  posestream run --source rtsp://127.0.0.1:8554/cam --source rtsp://127.0.0.1:8554/cam2 --record out/cams.mp4

Exit status: 0 done, 1 a stage failed (recording finalised), 2 bad input (one-line error),
130 interrupted (recording finalised).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", action="append", required=True,
                   help="video file, image folder/glob, webcam index (0) or rtsp:// URL; repeat for several")
    p.add_argument("--model", default=None,
                   help="checkpoint (.pt), ONNX file or registered model name (random weights, for tests); "
                        "default: the shipped trained model, models/weights/movenet_paf.pt")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "torch"), default=None)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--fp16", action="store_true", help="half precision (PyTorch on CUDA)")
    p.add_argument("--input-size", type=int, default=None, help="network input long side")
    p.add_argument("--record", default=None, help="write an H.264 MP4 with the overlay")
    p.add_argument("--jsonl", default=None, help="write keypoints, one JSON line per frame")
    p.add_argument("--show", action="store_true", help="show a window with the overlay")
    p.add_argument("--no-hud", action="store_true", help="no fps/latency overlay")
    p.add_argument("--policy", choices=("auto", "live", "lossless"), default=None)
    p.add_argument("--config", default=None, help="pipeline YAML (sections: policy, infer, track, render, sink, "
                                                  "source_options); flags override it")
    p.add_argument("--summary", default=None, help="write the JSON summary here (it is also printed)")
    p.add_argument("--realtime", action="store_true", help="read files at their own pace, like a camera")
    p.add_argument("--quiet", action="store_true", help="no status line")
    p.add_argument("--infer-delay-ms", type=float, default=None, help=argparse.SUPPRESS)  # tests of the live policy


def _fail(msg: str, code: int = 2) -> int:
    print(f"posestream run: error: {msg}", file=sys.stderr)
    return code


def build_config(args: argparse.Namespace):
    import yaml

    from .pipeline import PipelineConfig

    d: dict = {}
    if args.config:
        path = Path(args.config)
        if not path.is_file():
            raise ValueError(f"{path}: config file not found")
        d = yaml.safe_load(path.read_text()) or {}
        if not isinstance(d, dict):
            raise ValueError(f"{path}: expected a mapping of sections")
    cfg = PipelineConfig.from_dict(d)
    cfg.sources = list(args.source)
    infer = dict(cfg.infer)
    for key, val in (("model", args.model), ("backend", args.backend), ("device", args.device),
                     ("input_size", args.input_size), ("slow_ms", args.infer_delay_ms)):
        if val is not None:
            infer[key] = val
    if args.fp16:
        infer["fp16"] = True
    cfg.infer = infer
    sink = dict(cfg.sink)
    for key, val in (("record", args.record), ("jsonl", args.jsonl)):
        if val is not None:
            sink[key] = val
    if args.show:
        sink["show"] = True
    cfg.sink = sink
    if args.no_hud:
        cfg.render = {**cfg.render, "hud": False}
    if args.policy:
        cfg.policy = args.policy
    if args.realtime:
        opts = dict(cfg.source_options)
        opts["file"] = {**(opts.get("file") or {}), "realtime": True}
        cfg.source_options = opts
    if args.summary:
        cfg.summary = args.summary
    if args.quiet:
        cfg.status_interval = 0
    return cfg


def _validate(cfg) -> None:
    """Fail fast, in this process, on what a user can get wrong (config keys, missing files)."""
    from .infer import InferConfig
    from .render import RenderConfig
    from .sinks import SinkConfig
    from .track import TrackerConfig

    InferConfig.from_dict(cfg.infer)
    TrackerConfig.from_dict(cfg.track)
    RenderConfig.from_dict(cfg.render)
    SinkConfig.from_dict(cfg.sink)
    from .sources import FileConfig, ImageFolderConfig, RtspConfig, WebcamConfig

    kinds = {"file": FileConfig, "rtsp": RtspConfig, "webcam": WebcamConfig, "images": ImageFolderConfig}
    for kind, opts in (cfg.source_options or {}).items():
        if kind not in kinds:
            raise ValueError(f"unknown key source_options.{kind}; known: {', '.join(kinds)}")
        kinds[kind].from_dict(opts)
    for s in cfg.sources:
        s = str(s)
        if s.isdigit() or "://" in s or any(c in s for c in "*?"):
            continue
        if not Path(s).exists():
            raise ValueError(f"{s}: file not found")
    m = cfg.infer.get("model")
    if m in (None, "default"):
        from posestream.models.shipped import shipped_checkpoint

        try:
            shipped_checkpoint()
        except FileNotFoundError as e:
            raise ValueError(str(e)) from None
    elif (m.endswith((".pt", ".pth", ".onnx"))) and not Path(m).is_file():
        raise ValueError(f"{m}: model file not found")


def run(args: argparse.Namespace) -> int:
    import logging

    from .pipeline import Pipeline, PipelineError

    try:
        cfg = build_config(args)
        _validate(cfg)
    except ValueError as e:
        return _fail(str(e))
    level = logging.getLogger().getEffectiveLevel()
    try:
        pipe = Pipeline(cfg, log_level=level)
        summary = pipe.run()
    except PipelineError as e:
        return _fail(str(e))
    except KeyboardInterrupt:
        return _fail("aborted", 130)
    print(json.dumps(summary, indent=2))
    if summary["failed_stage"]:
        return _fail("; ".join(summary["errors"]), 1)
    user_errors = [e for e in summary["errors"] if e.startswith("capture")]
    if user_errors and summary["frames_out"] == 0:
        return _fail(user_errors[0].split(": ", 1)[1])
    if summary["interrupted"]:
        return 130
    return 0
