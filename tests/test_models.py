"""Every registered model: forward contract, gradients, ONNX export parity (registry-parametrized)."""
import math

import numpy as np
import pytest
import torch

from posestream.models.nets.base import PoseNet
from posestream.models.registry import build_model, list_models

ALL = list_models("bottomup")  # movenet_thunder (top-down): tests/test_thunder.py
# exported in the default run; the others (25-60 M parameters, 100-230 MB graphs) only with -m slow
FAST_EXPORT = {"lite", "movenet_paf"}


def small_input(model, batch=1, seed=0):
    side = -(-64 // model.input_multiple) * model.input_multiple
    h, w = side, 2 * side  # non-square on purpose
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, h, w, generator=g)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(KeyError, match="unknown model 'openpose'.*lite"):
        build_model("openpose")


def test_registry_has_the_seed_architectures():
    for name in ("cmu_pose_vgg19", "cmu_pose_se_resnet50", "cmu_pose_se_resnet50_jr", "stacked_hourglass",
                 "stacked_hourglass_mpii", "multiscale_hourglass", "lite"):
        assert name in ALL


@pytest.mark.parametrize("name", ALL)
def test_forward_contract_and_gradients(name):
    torch.manual_seed(0)
    model = build_model(name)
    assert isinstance(model, PoseNet) and model.arch == {"name": name, "kwargs": {}}
    x = small_input(model, batch=2)
    model.train()
    stages = model(x)
    assert len(stages) == model.num_stages
    strides = model.meta()["stage_strides"]
    k = model.skeleton.num_keypoints
    for (outs, s) in zip(stages, strides):
        assert len(outs) == (2 if model.with_pafs else 1)
        assert outs[0].shape == (2, k + int(model.background), x.shape[2] // s, x.shape[3] // s)
        if model.with_pafs:
            assert outs[1].shape == (2, 2 * model.skeleton.num_limbs, x.shape[2] // s, x.shape[3] // s)
    assert strides[-1] == model.stride
    loss = sum((t.float() ** 2).mean() for outs in stages for t in outs)
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(float(g.abs().sum()) for g in grads) > 0
    model.eval()
    with torch.no_grad():
        final = model(x)
    assert isinstance(final, tuple) and final[0].shape == stages[-1][0].shape


@pytest.mark.parametrize("name", [n if n in FAST_EXPORT else pytest.param(n, marks=pytest.mark.slow) for n in ALL])
def test_onnx_export_matches_pytorch(name, tmp_path):
    from posestream.models.export import export_onnx, read_onnx_meta

    torch.manual_seed(0)
    model = build_model(name).eval()
    x = small_input(model)
    report = export_onnx(model, tmp_path / f"{name}.onnx", input_hw=tuple(x.shape[2:]))
    assert report["max_abs_err"] <= report["tolerance"]
    meta = read_onnx_meta(tmp_path / f"{name}.onnx")
    assert meta["arch"] == name and meta["stride"] == model.stride and meta["skeleton"] == model.skeleton.name


def test_metadata_read_from_the_file_bytes_equals_onnx_runtimes(tmp_path):
    """read_onnx_meta parses metadata_props straight from the protobuf (no session); it must agree
    with ONNX Runtime's view, and a file it cannot parse still gets ONNX Runtime's error."""
    from posestream.models.export import META_KEY, _metadata_props, export_onnx, onnx_session, read_onnx_meta

    torch.manual_seed(0)
    model = build_model("lite").eval()
    path = tmp_path / "lite.onnx"
    export_onnx(model, path, input_hw=tuple(small_input(model).shape[2:]))
    props = _metadata_props(path)
    assert props == dict(onnx_session(path).get_modelmeta().custom_metadata_map) and META_KEY in props
    assert read_onnx_meta(path)["arch"] == "lite"
    bad = tmp_path / "cut.onnx"
    bad.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError):
        _metadata_props(bad)
    with pytest.raises(Exception, match="(?i)protobuf|invalid|load|parse|fail"):
        read_onnx_meta(bad)


def test_se_block_hand_computed():
    from posestream.models.nets.cmu import SEBlock

    se = SEBlock(8, reduction=8)  # W1: 1 x 8, W2: 8 x 1
    with torch.no_grad():
        se.fc1.weight.fill_(0.1)
        se.fc1.bias.zero_()
        se.fc2.weight.copy_(torch.tensor([[(c - 3.5) / 10] for c in range(8)]))
        se.fc2.bias.zero_()
    # channel c is the constant c + 1, except one pixel of channel 0 that is 5: GAP(channel 0) = 2
    u = torch.stack([torch.full((2, 2), float(c + 1)) for c in range(8)])[None]
    u[0, 0, 0, 0] = 5.0
    z = [2.0] + [float(c + 1) for c in range(1, 8)]
    hidden = max(0.0, 0.1 * sum(z))                      # relu(W1 z) = 3.7
    s = [1 / (1 + math.exp(-hidden * (c - 3.5) / 10)) for c in range(8)]
    expected = u.clone()
    for c in range(8):
        expected[0, c] *= s[c]
    assert hidden == pytest.approx(3.7)
    assert torch.allclose(se(u), expected, atol=1e-6)
    assert se.fc1.weight.shape == (1, 8) and se.fc2.weight.shape == (8, 1)  # C/R x C, C x C/R


def test_cmu_vgg19_matches_the_published_size():
    # The released COCO model (pose_iter_440000.caffemodel, 19 heatmaps + 38 PAFs) has 52.3 M
    # parameters; ours predicts 18 + 40 channels, which changes only the branch heads.
    model = build_model("cmu_pose_vgg19")
    n = sum(p.numel() for p in model.parameters())
    assert 51.5e6 < n < 53.0e6
    vgg_convs = [m for m in model.backbone.features.modules() if isinstance(m, torch.nn.Conv2d)]
    assert len(vgg_convs) == 12  # 10 VGG-19 convs + 2 CPM convs
    stage2 = model.stages.refine_heat[0]
    ks = [m.kernel_size for m in stage2.modules() if isinstance(m, torch.nn.Conv2d)]
    assert ks == [(7, 7)] * 5 + [(1, 1)] * 2
    stage1 = model.stages.first_paf
    assert [m.kernel_size for m in stage1.modules() if isinstance(m, torch.nn.Conv2d)] == [(3, 3)] * 3 + [(1, 1)] * 2


def test_any_multiple_of_the_stride_works():
    model = build_model("lite").eval()
    for h, w in ((8, 8), (40, 72), (256, 320)):
        with torch.no_grad():
            heat, paf = model(torch.zeros(1, 3, h, w))
        assert heat.shape[2:] == (h // 4, w // 4) and np.isfinite(paf.numpy()).all()


@pytest.mark.parametrize("name", ["stacked_hourglass_mpii", "multiscale_hourglass", "cmu_pose_se_resnet18"])
def test_sides_that_are_multiples_of_the_stride_but_not_the_alignment(name):
    model = build_model(name, **({"num_stages": 2} if name.startswith("cmu") else {})).eval()
    s = model.stride
    h, w = 3 * s, 5 * s  # e.g. 12 x 20 for stride 4: the hourglass needs 64 internally
    with torch.no_grad():
        out = model(torch.randn(1, 3, h, w))
    assert out[0].shape[2:] == (h // s, w // s)
