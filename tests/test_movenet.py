"""movenet_paf: MoveNet MultiPose backbone + FPN implemented from ../shared/data/init/SPEC.md — strict
loading, the spec's parity vectors, preprocessing, the training recipe's freezing and LR schedule,
and the shipped checkpoint."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from posestream.models.nets.movenet import MoveNetBackbone, load_npz_state
from posestream.models.registry import build_model

REPO = Path(__file__).resolve().parents[1]
INIT = (REPO / ".." / "shared" / "data" / "init").resolve()
PARITY = INIT / "parity"
TAPS = ("C2", "C3", "C4", "C5", "P4", "P3", "P2")
TOLERANCE = 1e-3  # parity/README.md: max|ours - expected| <= 1e-3 * max|expected|


@pytest.fixture(scope="module")
def pretrained():
    model = build_model("movenet_paf").eval()
    assert model.load_pretrained(INIT) == ["backbone+fpn", "kpt_heatmap head"]
    return model


@pytest.mark.parametrize("i", [0, 1])
def test_backbone_matches_the_tfjs_reference_activations(pretrained, i):
    x = torch.from_numpy(np.load(PARITY / f"input_{i}.npy"))
    with torch.no_grad():
        feats = pretrained.backbone.features(x)
    for tap in TAPS:
        expected = np.load(PARITY / f"expected_{i}_{tap}.npy")
        assert feats[tap].shape == expected.shape, tap
        err = np.abs(feats[tap].numpy() - expected).max() / np.abs(expected).max()
        assert err <= TOLERANCE, f"{tap}: relative error {err:.2e}"
        assert err <= 1e-4, f"{tap}: {err:.2e} is far above what this port measured (<= 3e-5)"


def test_heatmap_head_starts_as_movenets_keypoint_head(pretrained):
    x = torch.from_numpy(np.load(PARITY / "input_0.npy"))
    with torch.no_grad():
        heat, pafs = pretrained(x)
    expected = np.load(PARITY / "expected_0_head_kpt_heatmap.npy")
    assert heat.shape == expected.shape == (1, 17, 64, 64) and pafs.shape == (1, 40, 64, 64)
    assert np.abs(heat.numpy() - expected).max() <= TOLERANCE * np.abs(expected).max()


def test_our_preprocessing_gives_the_graphs_input():
    """x = (rgb / 255 - mean) / std with mean = std = 0.5 is the spec's pixel * c - 1 (c the fp16-rounded
    1/127.5) up to 3.1e-5, the difference the spec allows."""
    from posestream.models.predictor import normalise

    model = build_model("movenet_paf")
    for i in (0, 1):
        img = np.load(PARITY / f"image_{i}_uint8_hwc_rgb.npy")
        ours = normalise(img, model.mean, model.std)
        ours = ours.numpy() if torch.is_tensor(ours) else ours
        assert ours.shape == (1, 3, 256, 256)
        assert np.abs(ours - np.load(PARITY / f"input_{i}.npy")).max() <= 3.1e-5


def test_strict_loading_names_what_is_missing_or_unexpected(tmp_path):
    state = {k: v.numpy() for k, v in load_npz_state(INIT / "movenet_multipose_backbone.npz").items()}
    assert len(state) == 121 and sum(v.size for v in state.values()) == 4_698_920
    bad = dict(state)
    bad.pop("blocks.7.dw.bias")
    bad["blocks.7.dw.biass"] = state["blocks.7.dw.bias"]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(RuntimeError, match=r"(?s)Missing key.*blocks\.7\.dw\.bias.*Unexpected key.*biass"):
        MoveNetBackbone().load_state_dict(load_npz_state(tmp_path / "bad.npz"), strict=True)
    with pytest.raises(FileNotFoundError, match="weights file not found"):
        load_npz_state(tmp_path / "none.npz")


def test_stride2_layers_pad_bottom_right_like_tf_same():
    """A wrong padding shifts the grid: an impulse at the top-left pixel must reach the first output
    cell (TF SAME pads only bottom/right for these even sizes); with symmetric padding it would not."""
    bb = MoveNetBackbone()
    conv = bb.stem.conv
    with torch.no_grad():
        conv.weight.zero_()
        conv.bias.zero_()
        conv.weight[0, 0, 0, 0] = 1.0  # picks the top-left tap of each 3x3 window
        x = torch.zeros(1, 3, 64, 64)
        x[0, 0, 0, 0] = 1.0
        y = bb.stem(x)
    assert y.shape == (1, 48, 32, 32) and y[0, 0, 0, 0] == 1.0 and y[0, 0].sum() == 1.0


def test_recipe_freezes_the_stem_and_ramps_the_backbone_lr(tmp_path):
    from posestream.training.config import TrainConfig
    from posestream.training.trainer import Trainer, _backbone_lr_factor

    data = (REPO / ".." / "shared" / "data" / "coco-mini").resolve()
    cfg = {"model": {"name": "movenet_paf", "pretrained": str(INIT)},
           "data": {"train": [{"ann": str(data / "annotations/person_keypoints_train2017.json"),
                               "images": str(data / "train2017")}], "val": None, "input_size": 64, "workers": 0,
                    "subset": [535506, 84533]},
           "loss": {"heatmap_loss": "focal"},
           "optim": {"lr": 1e-3, "backbone_lr": 1e-4, "batch_size": 2, "warmup_steps": 0,
                     "freeze_backbone_steps": 2, "unfreeze_warmup_steps": 2,
                     "frozen": ["backbone.stem.", "backbone.blocks.0."]},
           "train": {"out_dir": str(tmp_path / "o"), "max_steps": 4, "ckpt_every": 100, "eval_every": 1000,
                     "log_every": 1, "image_every": 100}}
    trainer = Trainer(TrainConfig.from_dict(cfg), progress=False)
    start = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.fit(stop_at=2)
    now = dict(trainer.model.named_parameters())
    assert all(torch.equal(start[n], now[n]) for n in start if n.startswith("backbone."))  # frozen phase
    assert not torch.equal(start["paf.weight"], now["paf.weight"])
    trainer.fit()
    trainer.close()
    now = dict(trainer.model.named_parameters())
    assert torch.equal(start["backbone.stem.conv.weight"], now["backbone.stem.conv.weight"])
    assert torch.equal(start["backbone.blocks.0.dw.weight"], now["backbone.blocks.0.dw.weight"])
    assert not torch.equal(start["backbone.blocks.5.dw.weight"], now["backbone.blocks.5.dw.weight"])
    assert [_backbone_lr_factor(s, 2, 2, 0, 100, "constant") for s in range(5)] == [0.0, 0.0, 0.5, 1.0, 1.0]
    with pytest.raises(ValueError, match="optim.frozen: no parameter of movenet_paf starts with 'backbone.stm.'"):
        Trainer(TrainConfig.from_dict({**cfg, "optim": {"frozen": ["backbone.stm."]},
                                       "train": {"out_dir": str(tmp_path / "p")}}), progress=False)


def test_shipped_checkpoint_is_small_trained_and_loads():
    from posestream.models.checkpoint import load_checkpoint, read_checkpoint
    from posestream.models.shipped import SHIPPED_CHECKPOINT

    assert SHIPPED_CHECKPOINT.is_file(), "models/weights/movenet_paf.pt must ship with the repository"
    assert SHIPPED_CHECKPOINT.stat().st_size <= 15 * 2**20
    payload = read_checkpoint(SHIPPED_CHECKPOINT)
    assert all(v.dtype == torch.float16 for v in payload["state_dict"].values() if v.is_floating_point())
    meta = payload["meta"]
    assert meta["arch"] == "movenet_paf" and meta["heatmap_activation"] == "sigmoid"
    assert meta["recipe"]["model"]["name"] == "movenet_paf"
    heldout = meta["heldout"]  # posestream eval on coco-mini/val2017, recorded by `posestream ship`
    assert heldout["images"] == 79 and heldout["AP"] >= 0.25, json.dumps(heldout)
    model, _ = load_checkpoint(SHIPPED_CHECKPOINT)
    assert next(model.parameters()).dtype == torch.float32


def test_onnx_export_folds_the_same_padding_into_the_convolutions(tmp_path):
    """The 5 TF-'SAME' stride-2 layers are F.pad + conv in PyTorch; the export folds each Pad into
    its Conv's asymmetric pads (no Pad node left), and the parity check at another size passes."""
    import onnx

    from posestream.models.export import export_onnx

    torch.manual_seed(0)
    model = build_model("movenet_paf").eval()
    report = export_onnx(model, tmp_path / "m.onnx", input_hw=(128, 192))
    assert report["pads_fused"] == 5 and report["max_abs_err"] <= report["tolerance"]
    graph = onnx.load(str(tmp_path / "m.onnx")).graph
    assert not [n for n in graph.node if n.op_type == "Pad"]
    pads = sorted(tuple(a.ints) for n in graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads")
    assert pads.count((0, 0, 1, 1)) == 5


def test_original_movenet_heads_match_the_tfjs_reference(tmp_path):
    """The bench's timing reference is MoveNet as published: its six heads reproduce the spec's
    head logits, and it exports to ONNX with one output per head."""
    from posestream.models.export import export_onnx, onnx_session
    from posestream.models.nets.movenet import MOVENET_HEADS, MoveNetOriginal

    model = MoveNetOriginal().eval()
    model.load_pretrained(INIT)
    x = torch.from_numpy(np.load(PARITY / "input_0.npy"))
    with torch.no_grad():
        outs = model(x)
    for (name, n), out in zip(MOVENET_HEADS.items(), outs):
        expected = np.load(PARITY / f"expected_0_head_{name}.npy")
        assert out.shape == expected.shape == (1, n, 64, 64), name
        assert np.abs(out.numpy() - expected).max() <= TOLERANCE * np.abs(expected).max(), name
    report = export_onnx(model, tmp_path / "ref.onnx", input_hw=(128, 128), check=False)
    got = onnx_session(tmp_path / "ref.onnx").run(None, {"image": x.numpy()})
    assert report["outputs"] == list(MOVENET_HEADS) and report["pads_fused"] == 5
    for a, b in zip(got, outs):
        assert np.abs(a - b.numpy()).max() <= TOLERANCE * max(1.0, float(b.abs().max()))


def test_joint_relation_option_starts_as_identity_and_exports(tmp_path):
    """movenet_paf(relation=...) refines the (frozen) heatmap logits from P2: an exact identity
    before training, so it can sit on MoveNet's head; it exports with dynamic sizes."""
    from posestream.models.export import export_onnx

    torch.manual_seed(0)
    with_jr = build_model("movenet_paf", relation={"dim": 32, "heads": 4, "stages": 1}).eval()
    plain = build_model("movenet_paf").eval()
    plain.load_state_dict({k: v for k, v in with_jr.state_dict().items() if not k.startswith("relation.")})
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        for a, b in zip(with_jr(x), plain(x)):
            assert torch.equal(a, b)
    report = export_onnx(with_jr, tmp_path / "jr.onnx", input_hw=(96, 128))
    assert report["max_abs_err"] <= report["tolerance"]
