"""Relabel a pseudo-labelled COCO keypoint set with the accurate pipeline (bottom-up + Thunder refinement).

For every image: people found by the shipped bottom-up model, plus the people the old labels
already had (their boxes are proposals: the old teacher found someone there), are cropped and
refined by MoveNet Thunder exactly as ``posestream run --refine`` does; duplicates are suppressed by
OKS. Selection (as the old teacher's, ``../shared/data/pseudo/README.md``): a keypoint is labelled
(v=2) when its refined score is at least ``--kp-threshold`` and it lies inside the image; a person is
labelled when its score is at least ``--person-threshold`` with at least ``--min-keypoints``
labelled keypoints and a keypoint extent at least ``--min-height`` px tall. Every other candidate
scoring at least 0.05 becomes an ignore region (``iscrowd=1`` box), **every old ignore region is
kept**, and an old labelled person that no new label covers becomes an ignore region too (the old
teacher saw a person there: never teach background where a person may be).

  posestream relabel --data ../shared/data/pseudo/person_keypoints_pseudo.json \\
      --images ../shared/data/pseudo/images --out runs/relabel/pseudo.json
  posestream relabel --data ../shared/data/coco-mini/annotations/person_keypoints_train2017.json \\
      --images ../shared/data/coco-mini/train2017 --out runs/relabel/check_train.json --against-gt

``--against-gt``: the input's labels are real ones; instead of proposals from them (which would
leak the truth) only the detections are used, and the kept labels are scored against the input
(person precision, keypoint precision by per-keypoint OKS > 0.5, the share of real keypoints
labelled): the data README's quality table for the new labels.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

import numpy as np


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="COCO keypoint json to relabel")
    p.add_argument("--images", required=True, help="its image folder")
    p.add_argument("--out", required=True, help="where to write the relabelled json")
    p.add_argument("--kp-threshold", type=float, default=0.45, help="refined keypoint score for v=2 (default 0.45)")
    p.add_argument("--person-threshold", type=float, default=0.3, help="person score to be labelled (default 0.3)")
    p.add_argument("--min-keypoints", type=int, default=4, help="labelled keypoints a labelled person needs (4)")
    p.add_argument("--min-height", type=float, default=40.0, help="keypoint extent height in px a labelled person needs")
    p.add_argument("--against-gt", action="store_true", help="the input has real labels: score the new ones against them")
    p.add_argument("--limit", type=int, default=None, help="only the first N images (a quick look)")


def _fail(msg: str) -> int:
    print(f"posestream relabel: error: {msg}", file=sys.stderr)
    return 2


def _box(kps: np.ndarray) -> list[float]:
    f = kps[:, 2] > 0
    x0, y0 = kps[f, 0].min(), kps[f, 1].min()
    x1, y1 = kps[f, 0].max(), kps[f, 1].max()
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _ignore(ann_id: int, img_id: int, box) -> dict:
    x, y, w, h = (float(v) for v in box)
    return {"id": ann_id, "image_id": img_id, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
            "keypoints": [0] * 51, "bbox": [x, y, w, h], "area": w * h,
            "segmentation": [[x, y, x + w, y, x + w, y + h, x, y + h]]}


def relabel_image(image, anns: list, predictor, refiner, args, use_old: bool = True):
    """-> (labelled people [(keypoints (17, 3) with v, score)], ignore boxes) for one image."""
    from posestream.models.refine import boxes_from_xywh, mean_found_score, suppress_duplicates

    h, w = image.shape[:2]
    det = predictor.predictor(image).poses
    cands, scores = [], []
    if len(det.scores):
        p = refiner(image, det)
        cands.append(p.keypoints)
        scores.append(p.scores)
    old = [a for a in anns if not a.get("iscrowd") and a.get("num_keypoints", 0) > 0]
    if use_old and old:
        c, s = boxes_from_xywh(np.array([a["bbox"] for a in old], np.float32), refiner.cfg.box_scale)
        k = refiner.refine_boxes(image, c, s)
        cands.append(k)
        scores.append(mean_found_score(k))
    if not cands:
        return [], [a["bbox"] for a in old]
    kps, sc = np.concatenate(cands), np.concatenate(scores)
    keep = suppress_duplicates(kps, sc, refiner.cfg.nms_oks)
    people, ignores = [], []
    for i in keep:
        k = kps[i].copy()
        inside = (k[:, 0] >= 0) & (k[:, 1] >= 0) & (k[:, 0] <= w - 1) & (k[:, 1] <= h - 1)
        lab = (k[:, 2] >= args.kp_threshold) & inside
        if not (k[:, 2] > 0).any():
            continue
        height = np.ptp(k[lab, 1]) if lab.any() else 0.0
        if sc[i] >= args.person_threshold and lab.sum() >= args.min_keypoints and height >= args.min_height:
            out = np.zeros((17, 3), np.float32)
            out[lab, :2] = k[lab, :2]
            out[lab, 2] = 2
            people.append((out, float(sc[i])))
        elif sc[i] >= 0.05:
            ignores.append(_box(k))
    # an old labelled person no new label covers: ignore (the old teacher saw a person there)
    for a in old:
        x, y, bw, bh = a["bbox"]
        covered = False
        for k, _ in people:
            f = k[:, 2] > 0
            cx, cy = k[f, 0].mean(), k[f, 1].mean()
            if x <= cx <= x + bw and y <= cy <= y + bh:
                covered = True
                break
        if not covered:
            ignores.append(a["bbox"])
    return people, ignores


def _quality(gt_coco, new_anns: list, img_ids) -> dict:
    """Kept labels against real ones: person precision (matched at OKS >= 0.5), keypoint precision
    (per-keypoint OKS term > 0.5 in the matched person), share of the matched real people's visible
    keypoints that are labelled (the data README's columns)."""
    from posestream.models import oks
    from posestream.models.skeleton import COCO_17

    sig = COCO_17.sigma_array
    persons = matched = kp_total = kp_right = gt_kps = gt_kps_labelled = 0
    by_img: dict = {}
    for a in new_anns:
        if not a.get("iscrowd"):
            by_img.setdefault(a["image_id"], []).append(a)
    for img_id in img_ids:
        gts = [a for a in gt_coco.loadAnns(gt_coco.getAnnIds(imgIds=img_id, iscrowd=False)) if a["num_keypoints"] > 0]
        taken = set()
        for a in by_img.get(img_id, []):
            persons += 1
            pk = np.asarray(a["keypoints"], np.float64).reshape(-1, 3)
            lab = pk[:, 2] > 0
            kp_total += int(lab.sum())
            best, best_oks = -1, 0.5
            for gi, g in enumerate(gts):
                if gi in taken:
                    continue
                gk = np.asarray(g["keypoints"], np.float64).reshape(-1, 3)
                vis = (gk[:, 2] > 0) & lab
                if not vis.any():
                    continue
                s = oks.oks_terms(gk, pk, g["area"], sig)[vis].mean()
                if s >= best_oks:
                    best, best_oks = gi, s
            if best >= 0:
                taken.add(best)
                matched += 1
                gk = np.asarray(gts[best]["keypoints"], np.float64).reshape(-1, 3)
                t = oks.oks_terms(gk, pk, gts[best]["area"], sig)
                kp_right += int(((t > 0.5) & lab & (gk[:, 2] > 0)).sum())
                gt_kps_labelled += int(((gk[:, 2] > 0) & lab).sum())
                gt_kps += int((gk[:, 2] > 0).sum())
    return {"labelled_persons": persons, "person_precision": matched / max(persons, 1),
            "keypoint_precision": kp_right / max(kp_total, 1), "labelled_keypoints": kp_total,
            "share_of_gt_keypoints_labelled": gt_kps_labelled / max(gt_kps, 1)}


def run(args: argparse.Namespace) -> int:
    from pycocotools.coco import COCO
    from tqdm import tqdm

    from posestream.models.checkpoint import CheckpointError

    from .cli_eval import _refined
    from .evaluation.evaluate import read_image_rgb

    data, images = Path(args.data), Path(args.images)
    if not data.is_file():
        return _fail(f"{data}: annotation file not found")
    if not images.is_dir():
        return _fail(f"{images}: image folder not found")
    from posestream.models.checkpoint import load_checkpoint
    from posestream.models.predictor import Predictor
    from posestream.models.shipped import shipped_checkpoint

    try:
        model, meta = load_checkpoint(shipped_checkpoint())
        ns = argparse.Namespace(refine_set=[], refine_model="default", refine_backend="auto", refine_gt_boxes=False)
        predictor = _refined(Predictor.from_model(model, meta), ns, "cpu")
    except (CheckpointError, ValueError, FileNotFoundError) as e:
        return _fail(" ".join(str(e).split()))
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(data))
    src = json.loads(data.read_text())
    img_ids = sorted(coco.getImgIds())[: args.limit]
    new_anns: list[dict] = []
    next_id = max([a["id"] for a in src["annotations"]] + [0]) + 1
    n_people = n_ignore = 0
    for img_id in tqdm(img_ids, desc="relabel", unit="img"):
        info = coco.loadImgs(img_id)[0]
        anns = coco.loadAnns(coco.getAnnIds(imgIds=img_id))
        image = read_image_rgb(images / info["file_name"])
        people, ignores = relabel_image(image, anns, predictor, predictor.refiner, args, use_old=not args.against_gt)
        for k, score in people:
            x, y, w, h = _box(k)
            new_anns.append({"id": next_id, "image_id": img_id, "category_id": 1, "iscrowd": 0,
                             "keypoints": [round(float(v), 2) for v in k.reshape(-1)],
                             "num_keypoints": int((k[:, 2] > 0).sum()), "bbox": [x, y, w, h],
                             "area": 0.55 * w * h, "score": round(score, 4), "segmentation": []})
            next_id += 1
            n_people += 1
        if not args.against_gt:  # the old ignore regions stay
            new_anns.extend(a for a in anns if a.get("iscrowd"))
        for b in ignores:
            new_anns.append(_ignore(next_id, img_id, b))
            next_id += 1
            n_ignore += 1
    out = {k: v for k, v in src.items() if k != "annotations"}
    if args.limit:
        out["images"] = [i for i in src["images"] if i["id"] in set(img_ids)]
    out["annotations"] = new_anns
    out.setdefault("info", {})
    out["info"] = {**(out["info"] if isinstance(out["info"], dict) else {}),
                   "relabelled_by": "posestream relabel: movenet_paf + movenet_thunder refinement",
                   "relabel_settings": {k: getattr(args, k) for k in ("kp_threshold", "person_threshold",
                                                                     "min_keypoints", "min_height")}}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out))
    print(f"{len(img_ids)} images: {n_people} labelled people, {n_ignore} new ignore regions -> {args.out}")
    if args.against_gt:
        q = _quality(coco, new_anns, img_ids)
        print(json.dumps(q, indent=2))
    return 0
