"""JointRelationModule: shapes, identity at initialisation, cross-joint propagation, gradients, ONNX."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from posestream.models.nets.joint_relation import JointRelationModule

C, K = 16, 5  # small sizes keep these tests fast; the ONNX test uses the real COCO sizes


def _inputs(batch: int = 2, channels: int = K + 1, h: int = 12, w: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    features = torch.randn(batch, C, h, w, generator=g)
    heatmaps = torch.rand(batch, channels, h, w, generator=g)
    return features, heatmaps


def _perturb_kernel(module: JointRelationModule, seed: int = 1, std: float = 0.2) -> None:
    """Leave the exact identity of initialisation, so the relation path shows in the output."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        module.head.kernel.weight.copy_(torch.randn(module.head.kernel.weight.shape, generator=g) * std)
        module.head.kernel.bias.copy_(torch.randn(module.head.kernel.bias.shape, generator=g) * std)


@pytest.mark.parametrize("channels", [K, K + 1], ids=["no_background", "background"])
def test_output_shape_equals_heatmap_shape(channels):
    module = JointRelationModule(C, K, dim=32, heads=4).eval()
    _perturb_kernel(module)
    features, heatmaps = _inputs(channels=channels)
    out = module(features, heatmaps)
    assert out.shape == heatmaps.shape
    assert out.dtype == torch.float32
    assert not torch.allclose(out[:, :K], heatmaps[:, :K])  # the refinement is active
    if channels == K + 1:
        assert torch.equal(out[:, K], heatmaps[:, K])  # background passes through


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_identity_at_initialisation(mode):
    torch.manual_seed(0)
    # dropout > 0 in train mode still gives the identity: the zero kernel projection cancels everything
    module = JointRelationModule(C, K, dim=32, heads=4, stages=2, dropout=0.1).train(mode == "train")
    features, heatmaps = _inputs()
    assert torch.equal(module(features, heatmaps), heatmaps)


def _other_joints_change(stages: int) -> tuple[float, float]:
    """Max change of joint 0's output and of the other joints' outputs when only joint 0's heatmap moves."""
    torch.manual_seed(0)
    module = JointRelationModule(C, K, dim=32, heads=4, stages=stages).eval()
    _perturb_kernel(module)
    features, heatmaps = _inputs(channels=K)
    moved = heatmaps.clone()
    moved[:, 0] = 0.0
    moved[:, 0, 2, 3] = 1.0  # joint 0 now peaks somewhere else
    with torch.no_grad():
        delta = (module(features, moved) - module(features, heatmaps)).abs()
    return delta[:, 0].max().item(), delta[:, 1:].max().item()


def test_relation_blocks_propagate_across_joints():
    own0, others0 = _other_joints_change(stages=0)
    assert own0 > 1e-3  # the change reaches the output at all
    assert others0 < 1e-6  # without attention each joint only sees its own heatmap
    for stages in (1, 2):
        own, others = _other_joints_change(stages=stages)
        assert own > 1e-3
        assert others > 1e-3, f"stages={stages}: other joints did not react to joint 0"


def test_backward_gives_finite_gradients_for_all_parameters():
    torch.manual_seed(0)
    module = JointRelationModule(C, K, dim=32, heads=4, stages=2, dropout=0.1).train()
    _perturb_kernel(module)
    features, heatmaps = _inputs()
    features.requires_grad_(True)
    target = torch.rand_like(heatmaps)
    loss = ((module(features, heatmaps) - target) ** 2).mean()
    loss.backward()
    for name, p in module.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
    # the zero-init path is open: parameters before the kernel projection learn too
    assert module.pool.log_beta.grad.abs() > 0
    assert module.pool.proj.weight.grad.abs().sum() > 0
    assert module.blocks[0].attn.qkv.weight.grad.abs().sum() > 0
    assert torch.isfinite(features.grad).all()


def test_constructor_and_input_validation():
    with pytest.raises(ValueError, match="divisible"):
        JointRelationModule(C, K, dim=30, heads=4)
    module = JointRelationModule(C, K, dim=32, heads=4)
    features, heatmaps = _inputs(channels=K + 2)
    with pytest.raises(ValueError, match="channels"):
        module(features, heatmaps)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter announces its removal
@pytest.mark.parametrize("background", [True, False], ids=["background", "no_background"])
def test_onnx_export_matches_pytorch_on_two_sizes(tmp_path, background):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(0)
    channels, keypoints = 128, 17
    module = JointRelationModule(channels, keypoints).eval()
    _perturb_kernel(module)
    hm_channels = keypoints + int(background)
    path = tmp_path / "joint_relation.onnx"
    axes = {0: "batch", 2: "height", 3: "width"}
    torch.onnx.export(module, (torch.randn(1, channels, 32, 48), torch.rand(1, hm_channels, 32, 48)), str(path),
                      dynamo=False, opset_version=17, input_names=["features", "heatmaps"],
                      output_names=["refined"],
                      dynamic_axes={"features": axes, "heatmaps": axes, "refined": axes})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    g = torch.Generator().manual_seed(3)
    for batch, h, w in [(1, 32, 48), (2, 40, 40)]:
        features = torch.randn(batch, channels, h, w, generator=g)
        heatmaps = torch.rand(batch, hm_channels, h, w, generator=g)
        with torch.no_grad():
            expected = module(features, heatmaps).numpy()
        (got,) = session.run(None, {"features": features.numpy(), "heatmaps": heatmaps.numpy()})
        assert got.shape == expected.shape == tuple(heatmaps.shape)
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
        assert np.abs(expected - heatmaps.numpy()).max() > 1e-3  # a non-trivial graph was compared
