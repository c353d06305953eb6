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


def free_ports(n: int = 2) -> int:
    """A port P with P .. P+n-1 all free on 127.0.0.1 (a pipeline's --listen uses P, P+1, P+2)."""
    import random
    import socket

    for _ in range(200):
        p = random.randint(20000, 60000)
        socks = []
        try:
            for q in range(p, p + n):
                s = socket.socket()
                s.bind(("127.0.0.1", q))
                socks.append(s)
            return p
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free ports")
