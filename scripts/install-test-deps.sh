#!/usr/bin/env bash
# Install the system packages the RTSP tests need: GStreamer's RTSP server with its Python
# bindings, for Debian's own Python (/usr/bin/python3; a virtualenv cannot see them).
# Idempotent: does nothing when the bindings already import. Never fails: without root (or
# without apt-get) it says so, and the RTSP tests skip themselves.
set -u

PY=/usr/bin/python3
PACKAGES="python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav"

have_bindings() {
    [ -x "$PY" ] && "$PY" -c "import gi; gi.require_version('GstRtspServer', '1.0')" >/dev/null 2>&1
}

if have_bindings; then
    echo "install-test-deps: GstRtspServer bindings already present for $PY; nothing to do"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-test-deps: not root, cannot install ($PACKAGES); RTSP tests will be skipped"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install-test-deps: apt-get not found (not Debian/Ubuntu?); RTSP tests will be skipped"
    exit 0
fi

echo "install-test-deps: installing $PACKAGES"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get update -qq >/dev/null; then
    echo "install-test-deps: apt-get update failed; RTSP tests will be skipped"
    exit 0
fi
if ! apt-get install -y -qq --no-install-recommends $PACKAGES >/dev/null; then
    echo "install-test-deps: apt-get install failed; RTSP tests will be skipped"
    exit 0
fi

if have_bindings; then
    echo "install-test-deps: installed; GstRtspServer bindings import with $PY"
else
    echo "install-test-deps: installed, but $PY still cannot import GstRtspServer; RTSP tests will be skipped"
fi
exit 0
