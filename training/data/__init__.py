"""Training data: keypoint sources (COCO format, MPII), augmentation, and the target-rendering dataset."""
from .augment import AffineRecord, AugmentConfig, affine_matrix, color_jitter, eval_affine, random_affine
from .coco import CocoKeypoints, ConcatKeypoints, read_rgb, segmentation_rle, training_mix_pairs
from .dataset import PoseTrainDataset, loader_throughput
from .mpii import MPIIKeypoints, head_sizes

__all__ = [
    "AffineRecord", "AugmentConfig", "affine_matrix", "color_jitter", "eval_affine", "random_affine",
    "CocoKeypoints", "ConcatKeypoints", "read_rgb", "segmentation_rle", "training_mix_pairs",
    "PoseTrainDataset", "loader_throughput",
    "MPIIKeypoints", "head_sizes",
]
