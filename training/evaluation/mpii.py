"""Single-person MPII evaluation: PCKh@0.5 per joint.

Each labelled person is cropped around its annotated centre (a square of 1.25 x scale x 200 px,
the usual protocol of the stacked-hourglass papers), the network's heatmaps are read at their
maximum with a quarter-cell shift toward the higher neighbour (Newell et al.), mapped back to the
image, and a joint counts as correct when its distance to the label is at most 0.5 x head size
(0.6 x head-box diagonal). The mean leaves out pelvis and thorax, as MPII's evaluation does.
"""
from __future__ import annotations

import cv2
import numpy as np
import torch

from posestream.models.predictor import flip_outputs, normalise
from posestream.models.skeleton import get_skeleton

__all__ = ["evaluate_mpii", "crop_matrix", "heatmap_argmax"]


def crop_matrix(center, box: float, size: int) -> np.ndarray:
    """2x3 affine: the square of side ``box`` centred on ``center`` -> a ``size`` x ``size`` image."""
    s = size / box
    cx, cy = float(center[0]), float(center[1])
    return np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]], np.float64)


def heatmap_argmax(heat: np.ndarray) -> np.ndarray:
    """(K, h, w) -> (K, 3) cell x, y (quarter-cell refined) and peak value."""
    k, h, w = heat.shape
    out = np.zeros((k, 3))
    for j in range(k):
        i = int(np.argmax(heat[j]))
        y, x = divmod(i, w)
        fx, fy = float(x), float(y)
        if 0 < x < w - 1:
            fx += 0.25 * np.sign(heat[j, y, x + 1] - heat[j, y, x - 1])
        if 0 < y < h - 1:
            fy += 0.25 * np.sign(heat[j, y + 1, x] - heat[j, y - 1, x])
        out[j] = (fx, fy, heat[j, y, x])
    return out


@torch.no_grad()
def evaluate_mpii(model, meta: dict, ann_file, image_dir, flip: bool = False, device: str = "cpu",
                  threshold: float = 0.5) -> dict:
    from tqdm import tqdm

    from ..data.mpii import MPIIKeypoints

    ds = MPIIKeypoints(ann_file, image_dir)
    sk = get_skeleton(meta["skeleton"])
    size, stride = int(meta["input_size"]), int(meta["stride"])
    k = sk.num_keypoints
    act = torch.sigmoid if meta.get("heatmap_activation") == "sigmoid" else (lambda t: t)
    model = model.eval().to(device)
    correct = np.zeros(k)
    counted = np.zeros(k)
    people = 0
    for i in tqdm(range(len(ds)), desc="eval mpii", unit="img", leave=False):
        item = ds[i]
        for n in range(item["keypoints"].shape[0]):
            head = float(item["head_size"][n])
            if not np.isfinite(head) or head <= 0:
                continue
            m = crop_matrix(item["center"][n], 1.25 * 200.0 * float(item["scale"][n]), size)
            crop = cv2.warpAffine(item["image"], m, (size, size), flags=cv2.INTER_LINEAR)
            x = normalise(crop, meta["mean"], meta["std"]).to(device)
            heat = act(model(x)[0])
            if flip:
                hf = act(model(x.flip(-1))[0])
                hf, _ = flip_outputs(hf, None, sk, bool(meta["background"]))
                heat = (heat + hf) / 2
            pred = heatmap_argmax(heat[0, :k].float().cpu().numpy())
            pts = (pred[:, :2] + 0.5) * stride - 0.5  # cell -> crop pixel
            inv = cv2.invertAffineTransform(m)
            pts = pts @ inv[:, :2].T + inv[:, 2]
            gt = item["keypoints"][n]
            vis = gt[:, 2] > 0
            d = np.linalg.norm(pts - gt[:, :2], axis=1) / head
            correct += vis & (d <= threshold)
            counted += vis
            people += 1
    per = {name: float(c / t) if t else float("nan") for name, c, t in zip(sk.keypoints, correct, counted)}
    keep = [j for j, name in enumerate(sk.keypoints) if name not in ("pelvis", "thorax")]
    mean = float(correct[keep].sum() / max(1, counted[keep].sum()))
    return {"PCKh": mean, "per_joint": per, "people": people, "threshold": threshold}
