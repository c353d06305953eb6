"""Everything installs under one import name: posestream.models, posestream.stream, posestream.training."""
from __future__ import annotations

import configparser
import subprocess
import sys
from pathlib import Path

from conftest import REPO


def _py(code: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_top_level_names_do_not_leak(tmp_path):
    # a user's own models.py / stream.py / training.py must win, and ours must not be importable bare
    r = _py("import importlib.util as u; print([n for n in ('models', 'stream', 'training') if u.find_spec(n)])",
            tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"
    r = _py("import models", tmp_path)
    assert r.returncode != 0 and "No module named 'models'" in r.stderr
    (tmp_path / "models.py").write_text("MINE = 1\n")
    r = _py("import models, posestream.models.skeleton as s; print(models.MINE, s.get_skeleton('coco17').num_keypoints)",
            tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "17"]


def test_import_posestream_is_cheap_and_has_a_version(tmp_path):
    r = _py("import sys, posestream; print(posestream.__version__); "
            "print('torch' in sys.modules, 'cv2' in sys.modules)", tmp_path)
    assert r.returncode == 0, r.stderr
    version, heavy = r.stdout.splitlines()
    import posestream

    assert version == posestream.__version__
    assert heavy == "False False"  # importing the package alone is cheap


def test_version_flag(tmp_path):
    import posestream

    r = subprocess.run([sys.executable, "-m", "posestream", "--version"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == f"posestream {posestream.__version__}"


def test_every_package_folder_is_listed_in_setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = {"posestream"}
    for top in ("models", "stream", "training"):
        for init in (REPO / top).rglob("__init__.py"):
            rel = init.parent.relative_to(REPO)
            found.add("posestream." + ".".join(rel.parts))
    assert found == listed
