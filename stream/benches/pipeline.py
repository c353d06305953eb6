"""Benchmark the pipeline: multi-process (ZeroMQ) against a single-process loop, and the cost of
one ZeroMQ hop against a plain memory copy of the same frame — side by side, in one run.

1. End to end on the first ``--frames`` frames of a video (default
   ``../shared/data/videos/vtest.avi``, re-encoded once so both variants read the same file) with
   the default model (``lite``, ONNX Runtime): ``posestream run``'s processes (capture, infer,
   track, output; no files written, so nothing is rendered) and the same stages called one
   after the other in one process, driven as :mod:`stream.runner` drives them (open with the
   upstream metadata, reset on a new epoch, end, close). fps and capture-to-output latency.
2. One hop: a frame sent from this process to a child process over ``ipc://`` as the pipeline
   sends it (:mod:`stream.transport`: the image copied once into the sender's shared-memory
   ring, only the header through ZeroMQ; the receiver gets a view of the slot), throughput per
   frame, for 640x480, 1920x1080 and 3840x2160 RGB frames, against ``np.copyto`` of the same
   bytes in one process — and, for comparison, the plain ZeroMQ multipart hop (image bytes
   inline, ``copy=False``; what ``tcp://`` links still do).

3. The end-to-end figures of issue #15, in the same run: ``fps`` of the pipeline with recording on
   (MP4 + JSONL written, so every frame is rendered and encoded), ``forward_only_fps`` (the chosen
   backend's forward pass alone, on the same cores, on the same letterboxed frame size),
   ``efficiency`` = fps / forward_only_fps, the backend and precision chosen, and the start-up
   time from ``posestream run`` to the first output frame (the first JSONL line): warm (every
   cache filled, as after ``make install``, which runs ``posestream warmup``), cold (an empty
   posestream cache: the ONNX export and the backend calibration run first) and uncached (also
   an empty Numba cache: the decoder compiles), each in fresh processes.

  posestream bench pipeline
  posestream bench pipeline --model default --json
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import time

import numpy as np

SIZES = {"640x480": (480, 640), "1080p": (1080, 1920), "4K": (2160, 3840)}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", default="../shared/data/videos/vtest.avi")
    p.add_argument("--model", default="lite")
    p.add_argument("--frames", type=int, default=300, help="frames of the video used (default: %(default)s)")
    p.add_argument("--hop-frames", type=int, default=200)
    p.add_argument("--serve", action="store_true",
                   help="also run the pipeline with the browser view (--serve) and one connected viewer "
                        "pulling every frame it can, and report its fps against the plain pipeline's")
    p.add_argument("--no-e2e", action="store_true", help="skip part 3 (recorded fps, forward-only fps, start-up)")
    p.add_argument("--preset", choices=("fast", "balanced", "accurate"), default=None,
                   help="part 3 with a --preset's inference settings (e.g. fast: 320 with the backbone in INT8)")
    p.add_argument("--json", action="store_true")


def _sink(addrs: list, n: int, ack: str) -> None:
    """Child process: for each address in turn, receive ``n`` frames with the pipeline's
    :class:`~stream.transport.Receiver` (what a stage does) and say so on ``ack``."""
    import zmq

    from posestream.stream.transport import Receiver

    ctx = zmq.Context()
    done = ctx.socket(zmq.PUSH)
    done.connect(ack)
    for addr in addrs:
        rx = Receiver(ctx, addr, "lossless")
        done.send(b"bound")
        f = None
        for _ in range(n):
            f = rx.recv()
            assert f.image is not None and f.image.shape[2] == 3
        del f
        done.send(b"ok")
        rx.close()
    done.close()
    ctx.term()


def _hop(ctx, addr: str, done, img: np.ndarray, n: int, warm: int, shm: bool) -> tuple[float, bool]:
    """Seconds per frame over ``n`` frames sent back to back (after ``warm`` frames), lossless."""
    from posestream.stream.messages import Frame, now_ns
    from posestream.stream.transport import Sender

    assert done.recv() == b"bound"
    tx = Sender(ctx, addr, "lossless", shm=shm)
    f = Frame(source_id=0, frame_id=0, t_capture_ns=now_ns(), image=img)

    def send(i):
        f.frame_id = i
        tx.send(f)

    for i in range(warm):  # connection set-up, ring creation and mapping, first allocations
        send(i)
    time.sleep(0.5)
    t0 = time.perf_counter()
    for i in range(warm, warm + n):
        send(i)
    assert done.recv() == b"ok"
    dt = (time.perf_counter() - t0) / n
    used_shm = tx.sent_shm == warm + n
    tx.close()
    return dt, used_shm


def hop_cost(hw: tuple[int, int], n: int) -> dict:
    """One hop, as the pipeline does it (:class:`~stream.transport.Sender` -> ``Receiver`` in
    another process over ``ipc://``, lossless: the shared-memory ring), and the plain ZeroMQ
    multipart hop (inline buffers, ``copy=False``, what links did before the ring and still do
    for ``tcp://``), side by side with ``np.copyto`` of the same frame, in one run."""
    import zmq

    from posestream.stream.transport import ipc_address, private_folder, remove_private_folder

    folder = private_folder()
    addrs, ack = [ipc_address(folder, "shm"), ipc_address(folder, "zmq")], ipc_address(folder, "ack")
    ctx = zmq.Context()
    done = ctx.socket(zmq.PULL)
    done.bind(ack)
    warm = 5
    p = mp.get_context("spawn").Process(target=_sink, args=(addrs, n + warm, ack))
    p.start()
    img = np.random.default_rng(0).integers(0, 255, (*hw, 3), dtype=np.uint8)
    try:
        hop, used_shm = _hop(ctx, addrs[0], done, img, n, warm, shm=True)
        zhop, _ = _hop(ctx, addrs[1], done, img, n, warm, shm=False)
        p.join()
    finally:
        if p.is_alive():
            p.kill()
        done.close()
        ctx.term()
        remove_private_folder(folder)
    dst = np.empty_like(img)
    ts = []
    for _ in range(max(20, n // 4)):
        t = time.perf_counter()
        np.copyto(dst, img)
        ts.append(time.perf_counter() - t)
    mem = float(np.median(ts))
    return {"bytes": int(img.nbytes), "hop_ms": hop * 1e3, "memcpy_ms": mem * 1e3, "ratio": hop / mem,
            "shared_memory": used_shm, "zmq_hop_ms": zhop * 1e3, "zmq_ratio": zhop / mem}


def _chain(cfg) -> list:
    """The stages the pipeline's processes run after capture, built as the supervisor has them built
    (:mod:`stream.stages` factories on the config's sections): infer, track, then the output
    process's chain (render only when a sink needs the image, as :class:`Supervisor` decides)."""
    from posestream.stream import stages
    from posestream.stream.sinks import SinkConfig, build_sinks

    chain = [stages.infer_stage(cfg.infer), stages.track_stage(cfg.track)]
    if any(s.needs_image for s in build_sinks(SinkConfig.from_dict(cfg.sink))):
        chain.append(stages.render_stage(cfg.render))
    chain.append(stages.output_stage(cfg.sink))
    return chain


def single_process(cfg) -> dict:
    """The pipeline's stages called one after the other in this process, driven the way
    :func:`stream.runner.stage_main` drives them: ``open`` in order, each with the metadata the
    stages before it returned (the capture's sources, then the inference stage's model), a
    ``reset(source_id)`` when a source's epoch changes, ``process`` timed into
    ``frame.timings[name]``, ``end(source_id)`` at the end of the stream, ``close`` in reverse
    order, always."""
    from posestream.stream.capture import CaptureStage
    from posestream.stream.messages import now_ns

    capture = CaptureStage(str(cfg.sources[0]), 0, dict(cfg.source_options or {}))
    stages = [capture] + _chain(cfg)
    opened: list = []
    lat: list[float] = []
    n = 0
    t0 = t_end = None
    ended = False
    epochs: dict[int, int] = {}
    try:
        meta: dict = {}
        for st in stages:
            meta.update(st.open(dict(meta)) or {})
            opened.append(st)
        for frame in capture:
            sid = frame.source_id
            prev = epochs.get(sid)
            if prev is not None and prev != frame.epoch:
                for st in opened[1:]:
                    st.reset(sid)
            epochs[sid] = frame.epoch
            t0 = t0 or time.perf_counter()
            frame.timings["capture"] = [frame.t_capture_ns, now_ns()]
            out = frame
            for st in opened[1:]:
                a = now_ns()
                out = st.process(out)
                b = now_ns()
                if out is None:
                    break
                out.timings[st.name] = [a, b]
            if out is None:
                continue
            lat.append((now_ns() - out.t_capture_ns) / 1e6)
            n += 1
        t_end = time.perf_counter()
        ended = True
        for st in opened:
            st.end(capture.source_id)
    finally:
        if not ended:  # as the runner's finish: end the stream (recordings finalised), then close
            for st in opened:
                try:
                    st.end(capture.source_id)
                except Exception:  # noqa: BLE001 - the error already propagating matters more
                    pass
        for st in reversed(opened):
            st.close()
        if capture not in opened:
            capture.close()
    if n == 0:
        raise RuntimeError(f"{cfg.sources[0]}: no frame came through the stages")
    dt = max(t_end - t0, 1e-9)
    return {"frames": n, "fps": n / dt, "latency_ms_p50": float(np.median(lat)),
            "latency_ms_p95": float(np.percentile(lat, 95))}


def make_clip(source: str, frames: int, path: str) -> str:
    """The first ``frames`` frames of ``source`` as MPEG-4 Part 2 (cheap to decode), so both
    variants read the very same input."""
    import av

    with av.open(source) as src, av.open(path, "w") as out:
        vs = src.streams.video[0]
        st = out.add_stream("mpeg4", rate=int(vs.average_rate or 10))
        st.width, st.height, st.pix_fmt = vs.width, vs.height, "yuv420p"
        st.options = {"qscale": "2"}
        for i, f in enumerate(src.decode(video=0)):
            if i >= frames:
                break
            for p in st.encode(f.reformat(format="yuv420p")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    return path


def _viewer(url: str, stop, got: dict) -> None:
    """A browser-like viewer of ``--serve``: subscribes to source 0 over /ws and pulls frames (one
    credit at a time, as the page does), decoding each JPEG like a browser would."""
    import asyncio

    import aiohttp
    import cv2

    async def main() -> None:
        ws_url = url.replace("http://", "ws://", 1).split("?")[0].rstrip("/") + "/ws"
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ws_url) as ws:
                await ws.send_json({"type": "subscribe", "sources": [0], "credits": 1})
                while not stop.is_set():
                    try:
                        msg = await ws.receive(timeout=0.5)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type == aiohttp.WSMsgType.BINARY:
                        n = int.from_bytes(msg.data[:4], "big")
                        img = cv2.imdecode(np.frombuffer(msg.data[4 + n:], np.uint8), cv2.IMREAD_COLOR)
                        got["frames"] += img is not None
                        await ws.send_json({"type": "ready", "source_id": 0})
                    elif msg.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.ERROR):
                        break

    try:
        asyncio.run(main())
    except Exception as e:  # noqa: BLE001 - reported in the results
        got["error"] = str(e)


def multi_process(cfg, viewer: bool = False) -> dict:
    import threading

    from posestream.stream.pipeline import Supervisor, validate_config

    validate_config(cfg)
    stop, got, threads = threading.Event(), {"frames": 0}, []

    def on_ready(meta: dict) -> None:
        url = (meta.get("web") or {}).get("url")
        if viewer and url:
            t = threading.Thread(target=_viewer, args=(url, stop, got), daemon=True)
            t.start()
            threads.append(t)

    t0 = time.perf_counter()
    try:
        s = Supervisor(cfg, on_ready=on_ready).run()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=5)
    wall = time.perf_counter() - t0
    if s["errors"] or s["failed_stage"]:
        raise RuntimeError(f"the pipeline failed: {'; '.join(s['errors']) or s['failed_stage']}")
    lat = s["capture_to_output_ms"]
    out = {"frames": s["frames_out"], "fps": s["fps_out"], "wall_fps_incl_startup": s["frames_out"] / wall,
           "latency_ms_p50": lat["p50"], "latency_ms_p95": lat["p95"]}
    if viewer:
        out["viewer_frames"] = got["frames"]
        if "error" in got:
            out["viewer_error"] = got["error"]
    return out


def forward_only(model: str, clip: str, n: int = 60, infer: dict | None = None) -> dict:
    """The chosen backend's forward pass alone on the clip's first frame, letterboxed as the
    pipeline does: fps = 1000 / median ms, with the backend's description (``infer``: more
    inference settings, e.g. a preset's)."""
    import av

    from posestream.models.preprocess import letterbox

    from ..infer import InferConfig, load_network

    cfg = InferConfig.from_dict({"model": model, **(infer or {})})
    run_net, meta, desc = load_network(cfg)
    with av.open(clip) as c:
        img = next(c.decode(video=0)).to_ndarray(format="rgb24")
    lb, _ = letterbox(img, int(cfg.input_size or meta["input_size"]), multiple=int(meta.get("input_multiple", 32)))
    mean = np.asarray(meta["mean"], np.float32) * 255.0
    inv = 1.0 / (np.asarray(meta["std"], np.float32) * 255.0)
    x = np.ascontiguousarray(((lb.astype(np.float32) - mean) * inv).transpose(2, 0, 1)[None])
    for _ in range(5):
        run_net(x)
    ts = []
    for _ in range(n):
        t0 = time.perf_counter()
        run_net(x)
        ts.append(time.perf_counter() - t0)
    ms = float(np.median(ts) * 1e3)
    return {"forward_ms": ms, "forward_only_fps": 1000.0 / ms, "description": desc, "input_hw": list(x.shape[2:])}


def startup_s(model: str, clip: str, env: dict, timeout: float = 120.0, args: tuple = ()) -> float:
    """Seconds from starting ``posestream run`` to its first output frame (first JSONL line)."""
    import os
    import subprocess
    import sys
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, "o.jsonl")
        t0 = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "posestream", "run", "--source", clip, "--model", model,
                                 "--jsonl", out, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                env={**os.environ, **env})
        try:
            while time.perf_counter() - t0 < timeout:
                if os.path.exists(out) and os.path.getsize(out) > 0:
                    return time.perf_counter() - t0
                if proc.poll() is not None:
                    raise RuntimeError(f"posestream run exited {proc.returncode} before its first frame: "
                                       f"{proc.stderr.read().decode()[-300:]}")
                time.sleep(0.01)
            raise RuntimeError(f"no output frame within {timeout} s")
        finally:
            proc.kill()
            proc.wait()


def end_to_end(model: str, clip: str, d: str, preset: str | None = None) -> dict:
    import os
    import tempfile

    from posestream.stream.pipeline import PipelineConfig

    from ..cli_run import preset_settings

    infer = dict(preset_settings(preset, model).get("infer", {})) if preset else {}
    refine = preset_settings(preset, model).get("refine") if preset else None
    args = ("--preset", preset) if preset else ()

    # the forward pass alone just before and just after the pipeline run (this machine is shared:
    # the mean of the two brackets the run's conditions better than either)
    before = forward_only(model, clip, infer=infer)
    cfg = PipelineConfig(sources=[clip], infer={"model": model, **infer}, status_interval=0,
                         sink={"record": os.path.join(d, "rec.mp4"), "jsonl": os.path.join(d, "rec.jsonl")})
    if refine:
        cfg.refine = dict(refine)
    rec = multi_process(cfg)
    after = forward_only(model, clip, infer=infer)
    fwd = dict(after, forward_ms=(before["forward_ms"] + after["forward_ms"]) / 2)
    fwd["forward_only_fps"] = 1000.0 / fwd["forward_ms"]
    desc = fwd["description"]
    out = {"fps": rec["fps"], "forward_only_fps": fwd["forward_only_fps"], "efficiency": rec["fps"] / fwd["forward_only_fps"],
           "forward_ms": fwd["forward_ms"], "forward_ms_before_after": [before["forward_ms"], after["forward_ms"]],
           "input_hw": fwd["input_hw"], "latency_ms_p95": rec["latency_ms_p95"],
           "backend": desc.split(", ", 1)[1].split(" [")[0] if ", " in desc else desc,
           "precision": _precision(desc), "description": desc, "preset": preset}
    startup_s(model, clip, {}, args=args)  # make the caches warm (it is the run after this one that counts)
    out["startup_warm_s"] = startup_s(model, clip, {}, args=args)
    with tempfile.TemporaryDirectory() as cold:  # a host where posestream never ran (no export, no calibration)
        out["startup_cold_s"] = startup_s(model, clip, {"POSESTREAM_CACHE": os.path.join(cold, "ps")}, args=args)
    with tempfile.TemporaryDirectory() as cold:  # and no compiled decoder either (an install without warmup)
        out["startup_uncached_s"] = startup_s(model, clip, {"POSESTREAM_CACHE": os.path.join(cold, "ps"),
                                                            "NUMBA_CACHE_DIR": os.path.join(cold, "numba")}, args=args)
    return out


def _precision(desc: str) -> str:
    """The precision a backend description names (``... OpenVINO CPU bf16-mixed [...]``)."""
    for p in ("bf16-mixed", "bf16", "int8", "fp16"):
        if f" {p}" in desc.split(" [")[0]:
            return p
    return "fp32"


def run(args: argparse.Namespace) -> int:
    import os
    import tempfile

    res = {"source": args.source, "model": args.model}
    with tempfile.TemporaryDirectory() as d:
        clip = make_clip(args.source, args.frames, os.path.join(d, "clip.mkv"))
        from posestream.stream.pipeline import PipelineConfig

        # the same configuration for both: no files written, so the output process renders nothing
        cfg = PipelineConfig(sources=[clip], infer={"model": args.model}, status_interval=0)
        res["single_process"] = single_process(cfg)
        res["multi_process"] = multi_process(cfg)
        if args.serve:  # the same run with the browser view on a free loopback port and one viewer
            served = PipelineConfig(sources=[clip], infer={"model": args.model}, status_interval=0,
                                    sink={"serve": "127.0.0.1:0"})
            res["served"] = multi_process(served, viewer=True)
            res["served_ratio"] = res["served"]["fps"] / res["multi_process"]["fps"]
        if not args.no_e2e:
            from posestream.stream.backends import cpu_name, key_flags

            res.update(end_to_end(args.model, clip, d, getattr(args, "preset", None)))
            res["cpu"], res["flags"] = cpu_name(), key_flags()
    res["speedup"] = res["multi_process"]["fps"] / res["single_process"]["fps"]
    res["hops"] = {name: hop_cost(hw, args.hop_frames if name != "4K" else max(20, args.hop_frames // 4))
                   for name, hw in SIZES.items()}
    if args.json:
        print(json.dumps(res, indent=2))
        return 0
    sp, mp_ = res["single_process"], res["multi_process"]
    print(f"{args.model} on {args.source}, {sp['frames']} frames")
    print(f"{'':<22} {'fps':>7} {'latency p50 ms':>15} {'p95 ms':>8}")
    print(f"{'single-process loop':<22} {sp['fps']:7.1f} {sp['latency_ms_p50']:15.1f} {sp['latency_ms_p95']:8.1f}")
    print(f"{'pipeline (processes)':<22} {mp_['fps']:7.1f} {mp_['latency_ms_p50']:15.1f} {mp_['latency_ms_p95']:8.1f}")
    if "served" in res:
        sv = res["served"]
        print(f"{'+ --serve, 1 viewer':<22} {sv['fps']:7.1f} {sv['latency_ms_p50']:15.1f} {sv['latency_ms_p95']:8.1f}"
              f"   viewer got {sv['viewer_frames']} of {sv['frames']} frames")
    print(f"pipeline / loop: {res['speedup']:.2f}x")
    if "served" in res:
        print(f"served / pipeline: {res['served_ratio']:.2f}x (goal >= 0.9; the served run also renders "
              f"every frame and encodes the viewer's JPEGs)")
    print(f"{'frame':<9} {'MB':>6} {'hop ms':>8} {'memcpy ms':>10} {'ratio':>6} {'ZeroMQ-only hop ms':>19} {'ratio':>6}")
    for name, h in res["hops"].items():
        print(f"{name:<9} {h['bytes'] / 2**20:6.1f} {h['hop_ms']:8.3f} {h['memcpy_ms']:10.3f} {h['ratio']:6.2f} "
              f"{h['zmq_hop_ms']:19.3f} {h['zmq_ratio']:6.2f}")
    if "fps" in res:
        print(f"end to end with recording (MP4 + JSONL), {res['description']}")
        print(f"  fps {res['fps']:.1f}, forward only {res['forward_only_fps']:.1f} fps ({res['forward_ms']:.1f} ms at "
              f"{res['input_hw'][0]}x{res['input_hw'][1]}): efficiency {res['efficiency']:.2f}")
        print(f"  start-up to the first output frame: warm {res['startup_warm_s']:.2f} s, cold {res['startup_cold_s']:.2f} s, "
              f"uncached {res['startup_uncached_s']:.2f} s"
              f"   (CPU {res['cpu']}; {' '.join(res['flags'])})")
    if not all(h["shared_memory"] for h in res["hops"].values()):
        print("(shared memory unavailable here: the hop went inline through ZeroMQ)")
    return 0
