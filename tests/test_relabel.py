"""`posestream relabel` (a pseudo-labelled set relabelled by the accurate pipeline) and
`posestream bench refine`, through the real CLI on shared data."""
import json
import subprocess
import sys
from pathlib import Path

from conftest import SHARED_DATA

REPO = Path(__file__).resolve().parents[1]


def _run(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "posestream", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout)


def test_relabel_keeps_ignore_regions_and_loads_with_pycocotools(tmp_path):
    from pycocotools.coco import COCO

    src = SHARED_DATA / "pseudo" / "person_keypoints_pseudo.json"
    out = tmp_path / "pseudo.json"
    r = _run("relabel", "--data", str(src), "--images", str(SHARED_DATA / "pseudo" / "images"), "--out", str(out),
             "--limit", "12")
    assert r.returncode == 0, r.stderr[-2000:]
    new = json.loads(out.read_text())
    old = json.loads(src.read_text())
    ids = {i["id"] for i in new["images"]}
    assert len(ids) == 12
    old_ignore = {a["id"] for a in old["annotations"] if a["image_id"] in ids and a.get("iscrowd")}
    new_ids = {a["id"] for a in new["annotations"]}
    assert old_ignore and old_ignore <= new_ids  # every old ignore region is kept
    people = [a for a in new["annotations"] if not a["iscrowd"]]
    assert people and all(a["num_keypoints"] >= 4 for a in people)
    for a in people:
        k = a["keypoints"]
        assert set(k[2::3]) <= {0, 2} and sum(v == 2 for v in k[2::3]) == a["num_keypoints"]
    assert len(new_ids) == len(new["annotations"])  # ids unique
    coco = COCO(str(out))
    assert len(coco.getImgIds()) == 12
    assert new["info"]["relabelled_by"].startswith("posestream relabel")


def test_relabel_against_real_labels_reports_quality(tmp_path):
    r = _run("relabel", "--data", str(SHARED_DATA / "coco-mini" / "annotations" / "person_keypoints_train2017.json"),
             "--images", str(SHARED_DATA / "coco-mini" / "train2017"), "--out", str(tmp_path / "t.json"),
             "--against-gt", "--limit", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    q = json.loads(r.stdout[r.stdout.index("{"):])
    assert q["labelled_persons"] > 0 and 0.5 <= q["person_precision"] <= 1 and 0.5 <= q["keypoint_precision"] <= 1


def test_relabel_missing_input_is_one_line(tmp_path):
    r = _run("relabel", "--data", str(tmp_path / "nope.json"), "--images", str(tmp_path), "--out", str(tmp_path / "o.json"))
    assert r.returncode == 2 and r.stderr.strip() == f"posestream relabel: error: {tmp_path / 'nope.json'}: annotation file not found"
    assert not (tmp_path / "o.json").exists()


def test_bench_refine_reports_every_cell():
    r = _run("bench", "refine", "--people", "1", "3", "--repeats", "1", "--backends", "onnxruntime", "--json")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout)
    row = res["backends"]["onnxruntime"]["people"]
    assert set(row) == {"1", "3"} and all(v["batched_ms"] > 0 and v["single_ms"] > 0 for v in row.values())
    assert res["cpu_flags"] and res["backends"]["onnxruntime"]["bottom_up_ms"] > 0
