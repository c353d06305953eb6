"""Image folders and glob patterns, in natural order (``pts = index / fps``)."""
from __future__ import annotations

import glob
import logging
import os
import re
from dataclasses import dataclass

from posestream.stream.messages import Frame, now_ns

from .base import Source, SourceError, _from_dict, _positive

__all__ = ["ImageFolderConfig", "ImageFolderSource", "IMAGE_EXTENSIONS"]

LOG = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pnm")


@dataclass(frozen=True)
class ImageFolderConfig:
    """Image folder options.

    Attributes:
        fps: frame rate the images stand for: ``pts = index / fps``.
    """

    fps: float = 10.0

    def __post_init__(self) -> None:
        _positive("fps", self.fps)

    @classmethod
    def from_dict(cls, d: dict | None) -> "ImageFolderConfig":
        """Build from a config section; an unknown key is an error that names it."""
        return _from_dict(cls, d, "images")


def _natural_key(path: str) -> list:
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", path)]


class ImageFolderSource(Source):
    """The images of a folder, or of a glob pattern, in natural order (``pts = index / fps``).

    Attributes:
        paths: the image files found at :meth:`open`.
        skipped: images that could not be read (skipped with a warning).
    """

    kind = "images"

    def __init__(self, spec: str, source_id: int = 0, config: ImageFolderConfig | None = None) -> None:
        super().__init__(spec, source_id)
        self.config = config or ImageFolderConfig()
        self.paths: list[str] = []
        self.skipped = 0
        self._index = 0

    def _open(self) -> None:
        if os.path.isdir(self.spec):
            names = [os.path.join(self.spec, n) for n in os.listdir(self.spec)]
        elif any(c in self.spec for c in "*?["):
            names = glob.glob(self.spec, recursive=True)
        else:
            raise SourceError(f"{self.spec}: folder not found")
        self.paths = sorted((p for p in names if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p)),
                            key=_natural_key)
        if not self.paths:
            raise SourceError(f"{self.spec}: no images (looked for {' '.join(IMAGE_EXTENSIONS)})")
        self.fps = float(self.config.fps)

    def _read(self) -> Frame | None:
        import cv2

        while self._index < len(self.paths):
            index, path = self._index, self.paths[self._index]
            self._index += 1
            bgr = cv2.imread(path, cv2.IMREAD_COLOR)
            t = now_ns()
            if bgr is None:
                self.skipped += 1
                LOG.warning("%s: cannot read image %s; skipped", self.spec, path)
                continue
            return self._frame(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), t, index / self.fps)
        if self.frames == 0:
            raise SourceError(f"{self.spec}: none of the {len(self.paths)} images could be read")
        return None

    def _close(self) -> None:
        pass
