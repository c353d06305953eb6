import subprocess
import sys

import pytest
import torch

from posestream.models.checkpoint import CheckpointError, load_checkpoint, read_checkpoint, save_checkpoint
from posestream.models.registry import build_model


@pytest.fixture
def lite_ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model("lite", width=32).eval()
    path = save_checkpoint(tmp_path / "lite.pt", model, recipe={"lr": 1e-3}, metrics={"AP": 0.1})
    return model, path


def test_round_trip_keeps_weights_and_metadata(lite_ckpt):
    model, path = lite_ckpt
    loaded, meta = load_checkpoint(path)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), loaded(x)))
    assert meta["arch"] == "lite" and meta["arch_kwargs"] == {"width": 32}
    assert meta["stride"] == 4 and meta["skeleton"] == "coco17" and len(meta["mean"]) == 3
    assert meta["recipe"] == {"lr": 1e-3} and meta["metrics"] == {"AP": 0.1}
    assert not loaded.training


def test_half_storage_loads_as_float32(tmp_path, lite_ckpt):
    model, _ = lite_ckpt
    path = save_checkpoint(tmp_path / "half.pt", model, half=True)
    assert read_checkpoint(path)["state_dict"]["initial.heat.weight"].dtype == torch.float16
    loaded, _ = load_checkpoint(path)
    assert loaded.initial.heat.weight.dtype == torch.float32
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(x)[0], loaded(x)[0], atol=5e-2)


def test_wrong_architecture_is_named(lite_ckpt):
    _, path = lite_ckpt
    with pytest.raises(CheckpointError, match=r"lite.pt: checkpoint is for model 'lite', not 'cmu_pose_vgg19'"):
        load_checkpoint(path, arch="cmu_pose_vgg19")


def test_weights_that_do_not_fit_are_described(lite_ckpt):
    _, path = lite_ckpt
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(path, width=48)  # same architecture, other width
    msg = str(e.value)
    assert "lite.pt" in msg and "do not fit" in msg and "shape mismatches" in msg and "\n" not in msg


@pytest.mark.parametrize("content,expect", [
    (b"\x00garbage" * 10, "not a readable checkpoint"),
    (None, "not a posestream checkpoint"),
])
def test_corrupt_or_foreign_files(tmp_path, content, expect):
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=expect) as e:
        load_checkpoint(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_truncated_and_missing(tmp_path, lite_ckpt):
    _, path = lite_ckpt
    cut = tmp_path / "cut.pt"
    cut.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(CheckpointError, match="cut.pt: not a readable checkpoint"):
        load_checkpoint(cut)
    with pytest.raises(CheckpointError, match="nope.pt: checkpoint not found"):
        load_checkpoint(tmp_path / "nope.pt")


def posestream(*args):
    return subprocess.run([sys.executable, "-m", "posestream", *args], capture_output=True, text=True, timeout=300)


def test_cli_export_checkpoint_and_errors(tmp_path, lite_ckpt):
    _, path = lite_ckpt
    out = posestream("export", str(path), "--out", str(tmp_path / "m.onnx"))
    assert out.returncode == 0, out.stderr
    assert "max abs err" in out.stdout and (tmp_path / "m.onnx").is_file()
    from posestream.models.export import read_onnx_meta

    meta = read_onnx_meta(tmp_path / "m.onnx")
    assert meta["arch_kwargs"] == {"width": 32} and meta["metrics"] == {"AP": 0.1}
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    for args, msg in (((str(bad),), "not a readable checkpoint"), (("nosuchmodel",), "neither a checkpoint")):
        r = posestream("export", *args, "--out", str(tmp_path / "x.onnx"))
        assert r.returncode == 2 and msg in r.stderr
        assert "Traceback" not in r.stderr and r.stderr.strip().count("\n") == 0


def test_cli_models_json():
    import json

    r = posestream("models", "--json")
    assert r.returncode == 0, r.stderr
    rows = json.loads(r.stdout)
    assert rows["lite"]["stride"] == 4 and rows["cmu_pose_vgg19"]["stages"] == 6
    assert 50 < rows["cmu_pose_vgg19"]["params_m"] < 54 and rows["lite"]["gflops"] > 0
