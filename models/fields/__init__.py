"""Heatmap and PAF fields: encoders (training targets) and the decoder (grouping), side by side."""
from .decoder import DecoderConfig, Poses, decode, decode_graph, decode_single, group, upsample
from .encoder import Targets, encode, encode_heatmaps, encode_mask, encode_pafs, grid_shape

__all__ = ["DecoderConfig", "Poses", "decode", "decode_graph", "decode_single", "group", "upsample", "Targets", "encode", "encode_heatmaps",
           "encode_mask", "encode_pafs", "grid_shape"]
