from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"shared data not found at {SHARED_DATA} (tests read ../shared/data from the repo root)")
    return SHARED_DATA


VTEST = (SHARED_DATA / "videos" / "vtest.avi").resolve()


def make_clip(path: Path, n: int, size=(384, 288), fps=10) -> Path:
    """The first n frames of vtest.avi (pedestrians), resized, as an H.264 MP4."""
    import av
    import cv2

    src = av.open(str(VTEST))
    out = av.open(str(path), "w")
    st = out.add_stream("libx264", rate=fps)
    st.width, st.height, st.pix_fmt = size[0], size[1], "yuv420p"
    for i, f in enumerate(src.decode(video=0)):
        if i >= n:
            break
        img = cv2.resize(f.to_ndarray(format="rgb24"), size)
        for p in st.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
            out.mux(p)
    for p in st.encode():
        out.mux(p)
    out.close()
    src.close()
    return path
