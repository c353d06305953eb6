"""Joint relation module: iterative self-attention across per-joint tokens that refines heatmaps.

Source: "Attention-based implicit keypoint modelling" (Computer Engineering 2024, 50(3)), seed method 3
of ``DESIGN.md``. The paper models the relations between joints with multi-stage iterative self-attention
over per-joint features, so a joint can be inferred from joints outside a CNN's receptive field (hard and
invisible keypoints). Its exact layers are not published; this is our design:

1. ``F' = P F + b``: features ``(B, C, h, w)`` mapped to ``(B, D, h, w)`` by a linear 1x1 projection
   (``nn.Linear(C, D)``). ``F'`` is never materialised: pooling commutes with a linear map, and
   ``<q, P F(p) + b> = <P^T q, F(p)> + <q, b>``, so the per-pixel work is two ``K x C`` products instead of
   a ``D x C`` convolution (the convolution alone cost more than the rest of the module on CPU).
2. Token pooling: ``a_k = softmax_p(beta * H_k(p))`` over all pixels ``p``; ``t_k = P (sum_p a_k(p) F(p))
   + b + e_k``, with ``e_k`` a learned joint-identity embedding and ``beta = exp(log_beta)`` a learned
   temperature (initially 10, so a unit peak outweighs ~2000 zero pixels). A token summarises what the
   network sees where it thinks joint ``k`` is. With several people the pooling mixes their instances of
   joint ``k``: the token is image-level context for that joint type, not one person's joint.
3. ``stages`` pre-norm transformer blocks over the K tokens (no positional term besides ``e_k``):
   ``t = t + MHSA(LN(t))``, ``t = t + FFN(LN(t))``, FFN = Linear(D, m D), GELU, Linear(m D, D). Every
   joint attends to every other joint; repeating the block is the iterative relation modelling.
4. Dynamic 1x1 kernels: ``q_k = W LN(t_k) + c``; ``delta_k(p) = <q_k, F'(p)> / sqrt(D)``;
   ``H'_k = H_k + delta_k``. ``W`` and ``c`` start at zero, so the module is an exact identity at
   initialisation and can be dropped into a trained network without changing its output.

A background channel (the last one, beyond ``num_keypoints``) is passed through unchanged: recomputing it
(e.g. ``1 - max_k H'_k``) would break the exact identity at initialisation and bake a target convention
into a module that does not know how the background was trained.

Only plain ops (matmul, softmax, LayerNorm, Linear), so the legacy ONNX exporter (opset 17) handles
dynamic batch, height and width.
"""
from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["JointRelationModule"]


class JointTokenPool(nn.Module):
    """Heatmap-weighted pooling of features into one token per joint, plus a joint-identity embedding.

    Also owns the feature projection ``P, b`` that :class:`DynamicKernelHead` reuses.

    Args:
        num_keypoints: K.
        in_channels: C, channels of the features.
        dim: token width D.
        init_temperature: initial ``beta`` of the spatial softmax over each heatmap.
    """

    def __init__(self, num_keypoints: int, in_channels: int, dim: int, init_temperature: float = 10.0) -> None:
        super().__init__()
        self.proj = nn.Linear(in_channels, dim)
        self.log_beta = nn.Parameter(torch.tensor(math.log(init_temperature)))
        self.joint_embed = nn.Parameter(torch.randn(num_keypoints, dim) * 0.02)

    def forward(self, features: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: (B, C, h, w) float32.
            heatmaps: (B, K, h, w) float32, keypoint heatmaps only (no background).

        Returns:
            (B, K, D) float32 tokens.
        """
        weights = torch.softmax(heatmaps.flatten(2) * self.log_beta.exp(), dim=-1)  # (B, K, hw)
        # Pool before projecting: the weights sum to 1, so this equals pooling P F + b.
        pooled = torch.matmul(weights, features.flatten(2).transpose(1, 2))  # (B, K, C)
        return self.proj(pooled) + self.joint_embed


class JointSelfAttention(nn.Module):
    """Multi-head self-attention across the K joint tokens.

    Written with matmul/softmax rather than ``nn.MultiheadAttention`` so the exported graph is plain ops
    and does not depend on the exporter's handling of the fused attention kernel.

    Args:
        dim: token width D, divisible by ``heads``.
        heads: number of attention heads.
        dropout: dropout on the attention weights and the output.
    """

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.attn_drop = nn.Dropout(dropout)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, K, D) float32 tokens.

        Returns:
            (B, K, D) float32, each token a mixture of all tokens.
        """
        b, k, d = x.shape
        qkv = self.qkv(x).reshape(b, k, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, key, v = qkv[0], qkv[1], qkv[2]  # (B, heads, K, head_dim)
        attn = torch.softmax(torch.matmul(q, key.transpose(-2, -1)) / math.sqrt(self.head_dim), dim=-1)
        out = torch.matmul(self.attn_drop(attn), v).transpose(1, 2).reshape(b, k, d)
        return self.proj_drop(self.proj(out))


class RelationBlock(nn.Module):
    """One stage of relation modelling: pre-norm self-attention and feed-forward, both residual.

    Args:
        dim: token width D.
        heads: attention heads.
        ffn_mult: hidden width of the feed-forward network, in multiples of D.
        dropout: dropout in attention and feed-forward.
    """

    def __init__(self, dim: int, heads: int, ffn_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = JointSelfAttention(dim, heads, dropout)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                 nn.Linear(ffn_mult * dim, dim), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """
        Args:
            x: (B, K, D) float32 tokens.

        Returns:
            (B, K, D) float32 tokens.
        """
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class DynamicKernelHead(nn.Module):
    """Turns each refined token into a 1x1 kernel on ``F' = P F + b``: the heatmap correction.

    The kernel projection is zero-initialised so the correction is exactly zero at initialisation.

    Args:
        dim: token width D.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.kernel = nn.Linear(dim, dim)
        nn.init.zeros_(self.kernel.weight)
        nn.init.zeros_(self.kernel.bias)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, tokens: torch.Tensor, features: torch.Tensor, proj: nn.Linear) -> torch.Tensor:
        """
        Args:
            tokens: (B, K, D) float32 refined joint tokens.
            features: (B, C, h, w) float32, the unprojected features.
            proj: the ``Linear(C, D)`` that defines ``F'``.

        Returns:
            (B, K, h*w) float32 heatmap corrections ``delta``.
        """
        q = self.kernel(self.norm(tokens))  # (B, K, D)
        # <q, P F + b> = <P^T q, F> + <q, b>: the kernel is moved into feature space, F' is never built.
        kernels = torch.matmul(q, proj.weight)  # (B, K, C)
        offset = torch.matmul(q, proj.bias).unsqueeze(-1)  # (B, K, 1)
        return (torch.matmul(kernels, features.flatten(2)) + offset) * self.scale


class JointRelationModule(nn.Module):
    """Refines keypoint heatmaps with self-attention across joints (see the module docstring).

    Args:
        in_channels: C, channels of the input features.
        num_keypoints: K, keypoint heatmaps to refine (a background channel beyond K passes through).
        dim: token width D.
        heads: attention heads; must divide ``dim``.
        stages: number of relation blocks (0 disables the interaction between joints).
        ffn_mult: feed-forward hidden width in multiples of ``dim``.
        dropout: dropout inside the relation blocks.
    """

    def __init__(self, in_channels: int, num_keypoints: int, dim: int = 128, heads: int = 4, stages: int = 2,
                 ffn_mult: int = 2, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim={dim} is not divisible by heads={heads}")
        if stages < 0:
            raise ValueError(f"stages must be >= 0, got {stages}")
        self.num_keypoints = num_keypoints
        self.pool = JointTokenPool(num_keypoints, in_channels, dim)
        self.blocks = nn.Sequential(*[RelationBlock(dim, heads, ffn_mult, dropout) for _ in range(stages)])
        self.head = DynamicKernelHead(dim)

    def forward(self, features: torch.Tensor, heatmaps: torch.Tensor) -> torch.Tensor:
        """
        Args:
            features: (B, C, h, w) float32.
            heatmaps: (B, K, h, w) or (B, K + 1, h, w) float32; the optional last channel is the background.

        Returns:
            (B, K [+1], h, w) float32 refined heatmaps, same shape as ``heatmaps``; the background channel,
            if any, is returned unchanged.
        """
        k = self.num_keypoints
        # Checked only eagerly: under ONNX tracing a Python branch on a shape records a constant and warns.
        if not torch.jit.is_tracing() and heatmaps.shape[1] not in (k, k + 1):
            raise ValueError(f"heatmaps have {heatmaps.shape[1]} channels, expected {k} or {k + 1} (background)")
        keypoints = heatmaps[:, :k]
        tokens = self.blocks(self.pool(features, keypoints))
        refined = keypoints + self.head(tokens, features, self.pool.proj).reshape(keypoints.shape)
        # Without a background channel the slice is empty (B, 0, h, w); one code path, no shape branch.
        return torch.cat([refined, heatmaps[:, k:]], dim=1)
