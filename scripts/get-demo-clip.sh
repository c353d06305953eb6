#!/usr/bin/env bash
# Fetch the demo clip (vtest.avi: pedestrians on a campus, 768x576, 10 fps, 795 frames; OpenCV's
# sample data, Apache-2.0/BSD) from Debian's `opencv-doc` package, using only the package registry:
# `apt-get download` (no root needed) + `dpkg -x`. Cached: does nothing when DEST exists.
#   usage: scripts/get-demo-clip.sh [DEST]      (default data/vtest.avi)
set -eu
DEST=${1:-data/vtest.avi}
if [ -s "$DEST" ]; then
    exit 0
fi
how="pass your own clip instead: make demo SOURCE=path/to/video.mp4 (a file, an image folder, rtsp://... or a webcam index)"
for tool in apt-get dpkg; do
    if ! command -v $tool >/dev/null 2>&1; then
        echo "get-demo-clip: $tool not found (not Debian/Ubuntu?), cannot fetch vtest.avi from opencv-doc; $how" >&2
        exit 1
    fi
done
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "get-demo-clip: downloading Debian's opencv-doc (~96 MB) for vtest.avi"
if ! (cd "$tmp" && apt-get download -q opencv-doc >/dev/null 2>"$tmp/apt.log"); then
    echo "get-demo-clip: 'apt-get download opencv-doc' failed ($(tail -n 1 "$tmp/apt.log")); try 'apt-get update' first, or $how" >&2
    exit 1
fi
dpkg -x "$tmp"/opencv-doc_*.deb "$tmp/x"
clip=$(find "$tmp/x" -name vtest.avi | head -n 1)
if [ -z "$clip" ]; then
    echo "get-demo-clip: this opencv-doc has no vtest.avi; $how" >&2
    exit 1
fi
mkdir -p "$(dirname "$DEST")"
cp "$clip" "$DEST.part" && mv "$DEST.part" "$DEST"
echo "get-demo-clip: wrote $DEST"
