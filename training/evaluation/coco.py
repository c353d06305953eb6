"""COCO keypoint evaluation with pycocotools."""
from __future__ import annotations

import contextlib
import io

import numpy as np

__all__ = ["COCO_STAT_NAMES", "coco_keypoint_eval", "poses_to_coco_results"]

COCO_STAT_NAMES = ("AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl")


def poses_to_coco_results(image_id: int, keypoints: np.ndarray, scores: np.ndarray, category_id: int = 1) -> list[dict]:
    """One image's poses as COCO result dicts.

    Args:
        keypoints: (N, K, 3) x, y, score in original image pixels.
        scores: (N,) person scores.
    """
    out = []
    for kp, s in zip(np.asarray(keypoints, dtype=np.float64), np.asarray(scores, dtype=np.float64)):
        flat = np.concatenate([kp[:, :2], np.clip(kp[:, 2:3], 0, None)], axis=1).reshape(-1)
        out.append({"image_id": int(image_id), "category_id": category_id,
                    "keypoints": [round(float(v), 3) for v in flat], "score": float(s)})
    return out


def coco_keypoint_eval(coco_gt, results: list[dict], image_ids=None, quiet: bool = True) -> dict[str, float]:
    """COCO OKS keypoint AP/AR of ``results`` against ``coco_gt`` (a pycocotools COCO).

    Returns:
        dict with the ten standard stats (AP, AP50, AP75, APm, APl, AR, ...). With no detections
        at all every stat is 0.0 (pycocotools cannot load an empty result list).
    """
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {k: 0.0 for k in COCO_STAT_NAMES}
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
        dt = coco_gt.loadRes(results)
        ev = COCOeval(coco_gt, dt, "keypoints")
        if image_ids is not None:
            ev.params.imgIds = sorted(int(i) for i in image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(COCO_STAT_NAMES, ev.stats)}
