"""Losses: masked L2, OKHM top-k mining, focal loss, multi-stage sums, config validation."""
from __future__ import annotations

import math

import pytest
import torch

from posestream.training.losses import LossConfig, PoseLoss, heatmap_activation, heatmap_pixel_loss

# 17 distinct per-joint losses (a permutation of 1..17) for the OKHM examples
JOINT_LOSSES = [5.0, 17.0, 2.0, 11.0, 8.0, 1.0, 14.0, 3.0, 16.0, 9.0, 6.0, 13.0, 4.0, 10.0, 15.0, 7.0, 12.0]
TOP8 = 17 + 16 + 15 + 14 + 13 + 12 + 11 + 10  # 108
ALL17 = sum(range(1, 18))  # 153


def t64(values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float64)


def joint_error_maps(losses_per_sample: list[list[float]], bg_loss: float | None) -> torch.Tensor:
    """(B, C, 2, 2) predictions against zero targets whose channel c has loss losses[c].

    The whole error of a channel sits on pixel (0, 0): value sqrt(loss).
    """
    rows = []
    for losses in losses_per_sample:
        chans = list(losses) + ([bg_loss] if bg_loss is not None else [])
        m = torch.zeros(len(chans), 2, 2, dtype=torch.float64)
        m[:, 0, 0] = t64(chans).sqrt()
        rows.append(m)
    return torch.stack(rows)


def targets_for(pred: torch.Tensor, stride: int = 8, pafs: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> dict:
    b, _, h, w = pred.shape
    entry = {"heatmaps": torch.zeros_like(pred),
             "mask": mask if mask is not None else torch.ones(b, h, w, dtype=pred.dtype)}
    if pafs is not None:
        entry["pafs"] = pafs
    return {f"s{stride}": entry}


# ---------------------------------------------------------------------------------------- masked L2

def test_masked_l2_excludes_the_masked_pixel():
    pred = t64([[[[1.0, 2.0], [3.0, 4.0]]]])
    target = t64([[[[0.0, 0.0], [1.0, 0.0]]]])
    mask = t64([[[1.0, 1.0], [0.5, 0.0]]])  # the pixel with error 4^2 = 16 is ignored
    loss = PoseLoss(LossConfig(), background=False)
    total, parts = loss([(pred,)], {"s8": {"heatmaps": target, "mask": mask}}, [8])
    # 1^2 + 2^2 + 0.5 * (3 - 1)^2 = 7
    assert total.item() == pytest.approx(7.0)
    assert parts == {"heatmap/s0": pytest.approx(7.0), "total": pytest.approx(7.0)}

    # the normalisation is the mean over the batch: a second image with loss 1 -> (7 + 1) / 2
    pred2 = torch.cat([pred, t64([[[[1.0, 0.0], [0.0, 0.0]]]])])
    target2 = torch.cat([target, torch.zeros(1, 1, 2, 2, dtype=torch.float64)])
    mask2 = torch.cat([mask, torch.ones(1, 2, 2, dtype=torch.float64)])
    total2, _ = loss([(pred2,)], {"s8": {"heatmaps": target2, "mask": mask2}}, [8])
    assert total2.item() == pytest.approx(4.0)


def test_paf_loss_is_masked_l2_times_paf_weight():
    heat = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    pafs = t64([[[[1.0, 3.0]], [[-2.0, 0.5]]]])  # (1, 2, 1, 2)
    paf_t = t64([[[[0.0, 0.0]], [[0.0, 0.0]]]])
    mask = t64([[[1.0, 0.0]]])  # second pixel ignored: its 3^2 + 0.5^2 never counts
    tg = targets_for(heat, pafs=paf_t, mask=mask)
    total, parts = PoseLoss(LossConfig(paf_weight=0.5), background=False)([(heat, pafs)], tg, [8])
    assert parts["paf/s0"] == pytest.approx(1.0 + 4.0)
    assert total.item() == pytest.approx(0.5 * 5.0)


# --------------------------------------------------------------------------------------------- OKHM

def test_okhm_sums_exactly_the_8_largest_joint_losses_in_the_last_two_stages():
    cfg = LossConfig(okhm=True, background_weight=0.5)
    # background error 100 beats every joint: it would be "mined" if it were treated as a joint
    pred = joint_error_maps([JOINT_LOSSES], bg_loss=100.0)
    stages = [(pred.clone().requires_grad_(),) for _ in range(6)]
    total, parts = PoseLoss(cfg, background=True)(stages, targets_for(pred), [8] * 6)

    ordinary, mined = ALL17 + 0.5 * 100, TOP8 + 0.5 * 100  # background: never mined, always added
    for i in range(4):
        assert parts[f"heatmap/s{i}"] == pytest.approx(ordinary)
    for i in (4, 5):
        assert parts[f"heatmap/s{i}"] == pytest.approx(mined)
    assert total.item() == pytest.approx(4 * ordinary + 2 * mined)

    total.backward()
    top8 = {j for j, v in enumerate(JOINT_LOSSES) if v >= 10}
    assert len(top8) == 8
    for i, (p,) in enumerate(stages):
        g = p.grad[0, :, 0, 0].abs()
        for j in range(17):
            assert (g[j] > 0) == (i < 4 or j in top8), (i, j)
        assert g[17] > 0  # background keeps its gradient in every stage


def test_okhm_k_and_stages_are_configurable_and_no_background_works():
    pred = joint_error_maps([JOINT_LOSSES], bg_loss=None)
    stages = [(pred,), (pred,), (pred,)]
    tg = targets_for(pred)
    _, parts = PoseLoss(LossConfig(okhm=True, okhm_k=3, okhm_stages=[0]), background=False)(stages, tg, [8] * 3)
    assert parts["heatmap/s0"] == pytest.approx(17 + 16 + 15)
    assert parts["heatmap/s1"] == pytest.approx(ALL17)
    assert parts["heatmap/s2"] == pytest.approx(ALL17)

    _, parts = PoseLoss(LossConfig(okhm=True, okhm_stages=(-1,)), background=False)(stages, tg, [8] * 3)
    assert [parts[f"heatmap/s{i}"] for i in range(3)] == pytest.approx([ALL17, ALL17, TOP8])

    # k beyond the number of joints keeps them all
    _, parts = PoseLoss(LossConfig(okhm=True, okhm_k=40), background=False)(stages, tg, [8] * 3)
    assert parts["heatmap/s2"] == pytest.approx(ALL17)

    # okhm off: every stage is ordinary
    _, parts = PoseLoss(LossConfig(okhm=False), background=False)(stages, tg, [8] * 3)
    assert parts["heatmap/s2"] == pytest.approx(ALL17)

    with pytest.raises(ValueError, match="stage 3"):
        PoseLoss(LossConfig(okhm=True, okhm_stages=(3,)), background=False)(stages, tg, [8] * 3)


def test_okhm_top_k_is_per_sample_not_over_the_batch():
    small = [v / 100 for v in JOINT_LOSSES[::-1]]  # a second image whose joints are all easy
    pred = joint_error_maps([JOINT_LOSSES, small], bg_loss=None).requires_grad_()
    total, _ = PoseLoss(LossConfig(okhm=True, okhm_stages=(0,)), background=False)([(pred,)], targets_for(pred), [8])
    # per sample: each image keeps its own 8 hardest joints; over the batch the second would get none
    assert total.item() == pytest.approx((TOP8 + TOP8 / 100) / 2)
    total.backward()
    second_top8 = {j for j, v in enumerate(small) if v >= 0.10 - 1e-12}
    assert len(second_top8) == 8
    assert {j for j in range(17) if pred.grad[1, j, 0, 0] != 0} == second_top8


# -------------------------------------------------------------------------------------------- focal

def focal_by_hand(x: float, y: float, m: float, gamma: float) -> float:
    p = 1.0 / (1.0 + math.exp(-x))
    return m * abs(y - p) ** gamma * -(y * math.log(p) + (1.0 - y) * math.log(1.0 - p))


@pytest.mark.parametrize("gamma", [2.0, 1.5, 0.0])
def test_focal_loss_matches_the_formula_by_hand(gamma):
    logits = [2.0, -1.0, 0.5, -3.0]
    target = [1.0, 0.0, 0.6, 0.1]  # a peak, a negative, two soft Gaussian-flank values
    mask = [1.0, 1.0, 1.0, 0.5]
    expected = sum(focal_by_hand(x, y, m, gamma) for x, y, m in zip(logits, target, mask))
    pred = t64(logits).reshape(1, 1, 2, 2)
    tg = {"s4": {"heatmaps": t64(target).reshape(1, 1, 2, 2), "mask": t64(mask).reshape(1, 2, 2)}}
    total, _ = PoseLoss(LossConfig(heatmap_loss="focal", focal_gamma=gamma), background=False)([(pred,)], tg, [4])
    assert total.item() == pytest.approx(expected, rel=1e-9)
    # e.g. for gamma 2 the positive pixel alone: (1 - s(2))^2 * -log s(2)
    s2 = 1.0 / (1.0 + math.exp(-2.0))
    assert focal_by_hand(2.0, 1.0, 1.0, 2.0) == pytest.approx((1 - s2) ** 2 * -math.log(s2))


def test_focal_is_zero_where_the_sigmoid_equals_the_target_and_activation_matches():
    y = t64([0.05, 0.3, 0.9]).reshape(1, 1, 1, 3)
    perfect = torch.log(y / (1 - y))
    per_pixel = heatmap_pixel_loss(perfect, y, LossConfig(heatmap_loss="focal"))
    assert per_pixel.abs().max().item() < 1e-12
    off = heatmap_pixel_loss(perfect + 1.0, y, LossConfig(heatmap_loss="focal"))
    assert (off > 0).all()

    x = t64([-2.0, 0.0, 3.0])
    assert torch.allclose(heatmap_activation(LossConfig(heatmap_loss="focal"))(x), torch.sigmoid(x))
    for kind in ("l2", "weighted_l2"):
        assert torch.equal(heatmap_activation(LossConfig(heatmap_loss=kind))(x), x)


def test_weighted_l2_emphasises_the_foreground_also_on_the_background_channel():
    pred = t64([[[[1.0, 0.5]], [[0.0, 0.5]]]])  # (1, 2, 1, 2): one joint + background
    target = t64([[[[0.5, 0.0]], [[0.5, 1.0]]]])
    tg = {"s8": {"heatmaps": target, "mask": torch.ones(1, 1, 2, dtype=torch.float64)}}
    total, _ = PoseLoss(LossConfig(heatmap_loss="weighted_l2", fg_weight=9.0), background=True)([(pred,)], tg, [8])
    # joint: (1 + 9*0.5) * 0.5^2 + (1 + 0) * 0.5^2
    # background, foreground 1 - y = (0.5, 0): (1 + 9*0.5) * 0.5^2 + (1 + 0) * 0.5^2 (not 10 * 0.5^2)
    assert total.item() == pytest.approx(1.375 + 0.25 + 1.375 + 0.25)
    plain, _ = PoseLoss(LossConfig(), background=True)([(pred,)], tg, [8])
    assert plain.item() == pytest.approx(4 * 0.25)


# ------------------------------------------------------------------------------- stages and strides

def test_multi_stage_total_respects_stage_weights_and_picks_targets_by_stride():
    g = torch.Generator().manual_seed(0)
    b = 2

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    # s4 and s8 have the same map size here, so only the stride key tells them apart
    targets = {f"s{s}": {"heatmaps": rand(b, 3, 4, 4), "pafs": rand(b, 4, 4, 4), "mask": rand(b, 4, 4)}
               for s in (4, 8)}
    strides = [8, 4, 8]
    outputs = [(rand(b, 3, 4, 4).requires_grad_(), rand(b, 4, 4, 4).requires_grad_()) for _ in strides]
    cfg = LossConfig(paf_weight=0.25, stage_weights=[0.5, 1.0, 2.0])
    total, parts = PoseLoss(cfg, background=True)(outputs, targets, strides)

    expected = 0.0
    for i, ((heat, pafs), s) in enumerate(zip(outputs, strides)):
        t = targets[f"s{s}"]
        m = t["mask"][:, None]
        h_i = ((m * (heat - t["heatmaps"]) ** 2).sum() / b).item()
        p_i = ((m * (pafs - t["pafs"]) ** 2).sum() / b).item()
        assert parts[f"heatmap/s{i}"] == pytest.approx(h_i)
        assert parts[f"paf/s{i}"] == pytest.approx(p_i)
        expected += cfg.stage_weights[i] * (h_i + 0.25 * p_i)
    assert total.item() == pytest.approx(expected)
    assert parts["total"] == pytest.approx(expected)
    total.backward()
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for outs in outputs for t in outs)

    # swapping the strides changes which targets each stage sees, hence the value
    swapped, _ = PoseLoss(cfg, background=True)(outputs, targets, [4, 8, 4])
    assert swapped.item() != pytest.approx(expected)


def test_multi_scale_heatmap_only_and_background_inference():
    g = torch.Generator().manual_seed(1)
    # a multi-scale hourglass: stages at strides 2, 4, 8 with maps 8x8, 4x4, 2x2, heatmaps only;
    # targets follow the encoder (17 keypoints + background) and carry no PAFs
    targets = {f"s{s}": {"heatmaps": torch.rand(1, 18, n, n, generator=g), "mask": torch.ones(1, n, n)}
               for s, n in ((2, 8), (4, 4), (8, 2))}
    outputs = [(torch.rand(1, 17, n, n, generator=g),) for n in (8, 4, 2)]
    total, parts = PoseLoss(LossConfig())(outputs, targets, [2, 4, 8])  # no background: inferred from 17 vs 18
    assert set(parts) == {"heatmap/s0", "heatmap/s1", "heatmap/s2", "total"}
    expected = sum(((o[0] - targets[f"s{s}"]["heatmaps"][:, :17]) ** 2).sum().item()
                   for o, s in zip(outputs, (2, 4, 8)))
    assert total.item() == pytest.approx(expected, rel=1e-5)

    with_bg = [(torch.rand(1, 18, n, n, generator=g),) for n in (8, 4, 2)]
    total_bg, _ = PoseLoss(LossConfig(background_weight=0.0))(with_bg, targets, [2, 4, 8])
    expected_bg = sum(((o[0][:, :17] - targets[f"s{s}"]["heatmaps"][:, :17]) ** 2).sum().item()
                      for o, s in zip(with_bg, (2, 4, 8)))
    assert total_bg.item() == pytest.approx(expected_bg, rel=1e-5)

    with pytest.raises(KeyError, match="no 'pafs'"):
        PoseLoss(LossConfig())([(outputs[0][0], torch.zeros(1, 2, 8, 8))], targets, [2])
    with pytest.raises(KeyError, match="stride 16"):
        PoseLoss(LossConfig())(outputs[:1], targets, [16])
    with pytest.raises(ValueError, match="stage_weights"):
        PoseLoss(LossConfig(stage_weights=(1.0, 1.0)))(outputs, targets, [2, 4, 8])


# ------------------------------------------------------------------------------------------- config

def test_config_unknown_key_is_named_and_values_are_checked():
    with pytest.raises(ValueError, match="unknown loss option 'okhm_kk'"):
        LossConfig.from_dict({"okhm": True, "okhm_kk": 8})
    cfg = LossConfig.from_dict({"heatmap_loss": "focal", "okhm_stages": [4, 5], "stage_weights": [1, 2]})
    assert cfg.okhm_stages == (4, 5) and cfg.stage_weights == (1.0, 2.0)
    assert LossConfig.from_dict(None) == LossConfig()
    with pytest.raises(ValueError, match="heatmap_loss"):
        LossConfig(heatmap_loss="l1")
    with pytest.raises(ValueError, match="okhm_k"):
        LossConfig(okhm_k=0)
    with pytest.raises(ValueError, match="fg_weight"):
        LossConfig(fg_weight=-1.0)
