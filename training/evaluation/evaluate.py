"""Evaluate a checkpoint on a COCO keypoint set the way the field does (pycocotools OKS AP).

Decoding uses exactly the pipeline's code path (:class:`models.predictor.Predictor`).
Per-joint recall: each ground-truth person is matched to at most one predicted person (greedy by
prediction score, OKS >= 0.5, as COCO matches); a labelled joint counts as recalled when its own
OKS term exp(-d^2 / (2 s^2 k_j^2)) (:func:`models.oks.oks_terms`, the formula the tracker uses too)
is >= 0.5 in the matched person. Unmatched people count as
misses for all their joints. This shows which joints (wrists and ankles, the ones OKHM targets)
a model loses.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
from pathlib import Path

import cv2
import numpy as np

from posestream.models import oks

from .coco import coco_keypoint_eval, poses_to_coco_results

LOG = logging.getLogger(__name__)

__all__ = ["evaluate_coco", "per_joint_recall", "read_image_rgb"]


def read_image_rgb(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"{path}: image not found or not readable")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def per_joint_recall(coco_gt, results: list[dict], sigmas: np.ndarray, names) -> dict[str, float]:
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    hit = np.zeros(len(sigmas))
    total = np.zeros(len(sigmas))
    for img_id in coco_gt.getImgIds():
        gts = [a for a in coco_gt.loadAnns(coco_gt.getAnnIds(imgIds=img_id, iscrowd=False)) if a["num_keypoints"] > 0]
        preds = sorted(by_image.get(img_id, []), key=lambda r: -r["score"])
        gt_kp = [np.asarray(a["keypoints"], np.float64).reshape(-1, 3) for a in gts]
        for g in gt_kp:
            total += g[:, 2] > 0
        taken_gt = set()
        for p in preds:  # greedy by score, like COCO's matching
            pk = np.asarray(p["keypoints"], np.float64).reshape(-1, 3)
            best, best_oks = -1, 0.5
            for gi, (a, g) in enumerate(zip(gts, gt_kp)):
                if gi in taken_gt:
                    continue
                vis = g[:, 2] > 0
                terms = oks.oks_terms(g, pk, a["area"], sigmas)
                similarity = terms[vis].mean() if vis.any() else 0.0
                if similarity >= best_oks:
                    best, best_oks = gi, similarity
            if best >= 0:
                taken_gt.add(best)
                g = gt_kp[best]
                terms = oks.oks_terms(g, pk, gts[best]["area"], sigmas)
                hit += (g[:, 2] > 0) & (terms >= 0.5)
    return {n: float(h / t) if t else float("nan") for n, h, t in zip(names, hit, total)}


def evaluate_coco(predictor, ann_file: str | Path, image_dir: str | Path, results_out: str | Path | None = None,
                  progress: bool = True) -> dict:
    """Run ``predictor`` on every image of a COCO keypoint json and score it.

    Returns:
        {"AP", "AP50", "AP75", "APm", "APl", "AR", ..., "per_joint_recall": {joint: recall},
         "images": n, "people": n}
    """
    from pycocotools.coco import COCO
    from tqdm import tqdm

    ann_file, image_dir = Path(ann_file), Path(image_dir)
    if not ann_file.is_file():
        raise FileNotFoundError(f"{ann_file}: annotation file not found")
    if not image_dir.is_dir():
        raise FileNotFoundError(f"{image_dir}: image folder not found")
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(ann_file))
    img_ids = sorted(coco.getImgIds())
    results: list[dict] = []
    for img_id in tqdm(img_ids, desc="eval", unit="img", disable=not progress, leave=False):
        info = coco.loadImgs(img_id)[0]
        image = read_image_rgb(image_dir / info["file_name"])
        if getattr(predictor, "uses_annotations", False):  # refinement on the true boxes (upper bound)
            pred = predictor(image, coco.loadAnns(coco.getAnnIds(imgIds=img_id, iscrowd=False)))
        else:
            pred = predictor(image)
        results.extend(poses_to_coco_results(img_id, pred.poses.keypoints, pred.poses.scores))
    if results_out is not None:
        Path(results_out).parent.mkdir(parents=True, exist_ok=True)
        Path(results_out).write_text(json.dumps(results))
    stats = coco_keypoint_eval(coco, results, img_ids)
    sk = predictor.skeleton
    stats["per_joint_recall"] = per_joint_recall(coco, results, sk.sigma_array, sk.keypoints)
    stats["images"] = len(img_ids)
    stats["people"] = sum(1 for a in coco.loadAnns(coco.getAnnIds(imgIds=img_ids, iscrowd=False))
                          if a.get("num_keypoints", 0) > 0)
    stats["detections"] = len(results)
    return stats
