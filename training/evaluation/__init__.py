"""Evaluation: COCO keypoint AP through pycocotools (never our own AP)."""
from .coco import COCO_STAT_NAMES, coco_keypoint_eval, poses_to_coco_results

__all__ = ["COCO_STAT_NAMES", "coco_keypoint_eval", "poses_to_coco_results"]
