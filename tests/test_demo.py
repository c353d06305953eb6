"""`make demo`'s pieces: fetching the demo clip from Debian's opencv-doc, the shipped default model,
the README's frame strip."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
FETCH = REPO / "scripts" / "get-demo-clip.sh"
VTEST = (REPO / ".." / "shared" / "data" / "videos" / "vtest.avi").resolve()


def test_fetch_is_cached(tmp_path):
    dest = tmp_path / "data" / "vtest.avi"
    dest.parent.mkdir()
    dest.write_bytes(b"already here")
    r = subprocess.run(["bash", str(FETCH), str(dest)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout == "" and dest.read_bytes() == b"already here"


def test_fetch_without_apt_explains_source(tmp_path):
    bindir = tmp_path / "bin"  # a PATH with the basic tools but no apt-get / dpkg
    bindir.mkdir()
    for tool in ("dirname", "mktemp", "rm", "mkdir", "cp", "mv", "find", "head", "tail"):
        path = shutil.which(tool)
        if path:
            os.symlink(path, bindir / tool)
    r = subprocess.run([shutil.which("bash"), str(FETCH), str(tmp_path / "v.avi")], capture_output=True, text=True,
                       timeout=30, env={"PATH": str(bindir)})
    assert r.returncode == 1 and not (tmp_path / "v.avi").exists()
    assert "apt-get not found" in r.stderr and "make demo SOURCE=" in r.stderr and len(r.stderr.splitlines()) == 1


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("apt-get") is None, reason="needs apt-get (Debian/Ubuntu)")
def test_fetch_from_opencv_doc_gives_the_real_clip(tmp_path):
    dest = tmp_path / "data" / "vtest.avi"
    r = subprocess.run(["bash", str(FETCH), str(dest)], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    with av.open(str(dest)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.width, s.codec_context.height) == (768, 576)
        assert sum(1 for _ in c.decode(s)) == 795
    if VTEST.is_file():
        assert dest.read_bytes() == VTEST.read_bytes()


def test_missing_shipped_model_is_one_line(monkeypatch, tmp_path):
    import posestream.models.shipped as shipped

    monkeypatch.setattr(shipped, "SHIPPED_CHECKPOINT", tmp_path / "weights" / "movenet_paf.pt")
    with pytest.raises(FileNotFoundError, match=r"movenet_paf\.pt: the shipped model is missing.*--model"):
        shipped.shipped_checkpoint()


def test_frame_strip(tmp_path):
    video = tmp_path / "v.mp4"
    with av.open(str(video), "w") as out:
        st = out.add_stream("libx264", rate=10)
        st.width, st.height, st.pix_fmt = 160, 120, "yuv420p"
        for i in range(20):
            img = np.full((120, 160, 3), i * 12, np.uint8)
            for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(p)
        for p in st.encode():
            out.mux(p)
    png = tmp_path / "strip.png"
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_strip.py"), str(video), str(png), "--frames",
                        "4", "--rows", "2", "--width", "320", "--crop", "0,0,1,0.5"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    img = cv2.imread(str(png))
    assert img.shape == (2 * 60, 320, 3)  # 2 x 2 tiles of 160 x 60 (top halves), at width 320
    left, right = img[:60, :160].mean(), img[:60, 160:].mean()
    assert right > left  # later frames are brighter: tiles are in time order
    r = subprocess.run([sys.executable, str(REPO / "scripts" / "demo_strip.py"), str(tmp_path / "none.mp4"),
                        str(png)], capture_output=True, text=True)
    assert r.returncode == 2 and "none.mp4" in r.stderr and "Traceback" not in r.stderr
