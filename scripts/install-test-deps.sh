#!/usr/bin/env bash
# Install the system packages some tests need, in independent groups (one failing does not stop
# the other). Idempotent: a group already present is skipped. Never fails: without root (or
# without apt-get) it says so, and the tests that need the group skip themselves.
#
# 1. RTSP: GStreamer's RTSP server with its Python bindings, for Debian's own Python
#    (/usr/bin/python3; a virtualenv cannot see them).
# 2. Chromium (headless) for the live web view's browser test (tests/test_web.py).
# 3. ffmpeg (the command line tool) as the loopback RTSP/RTMP receiver of the restream tests
#    (tests/test_restream.py).
set -u

PY=/usr/bin/python3
PACKAGES="python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-libav"
BROWSER_PACKAGES="chromium"
FFMPEG_PACKAGES="ffmpeg"

have_bindings() {
    [ -x "$PY" ] && "$PY" -c "import gi; gi.require_version('GstRtspServer', '1.0')" >/dev/null 2>&1
}

have_chromium() {
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1
}

UPDATED=0
can_install() {  # $1: what the group is for (used in the skip reason)
    if [ "$(id -u)" -ne 0 ]; then
        echo "install-test-deps: not root, cannot install $2; $1 will be skipped"
        return 1
    fi
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "install-test-deps: apt-get not found (not Debian/Ubuntu?); $1 will be skipped"
        return 1
    fi
    if [ "$UPDATED" -eq 0 ]; then
        if ! DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null; then
            echo "install-test-deps: apt-get update failed; $1 will be skipped"
            return 1
        fi
        UPDATED=1
    fi
    return 0
}

install_group() {  # $1: what for, $2: packages
    echo "install-test-deps: installing $2"
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $2 >/dev/null; then
        echo "install-test-deps: apt-get install failed; $1 will be skipped"
        return 1
    fi
    return 0
}

# -- 1. RTSP ------------------------------------------------------------------------------------
if have_bindings; then
    echo "install-test-deps: GstRtspServer bindings already present for $PY; nothing to do"
elif can_install "RTSP tests" "($PACKAGES)" && install_group "RTSP tests" "$PACKAGES"; then
    if have_bindings; then
        echo "install-test-deps: installed; GstRtspServer bindings import with $PY"
    else
        echo "install-test-deps: installed, but $PY still cannot import GstRtspServer; RTSP tests will be skipped"
    fi
fi

# -- 2. Chromium --------------------------------------------------------------------------------
if have_chromium; then
    echo "install-test-deps: chromium already present; nothing to do"
elif can_install "the browser test (tests/test_web.py)" "($BROWSER_PACKAGES)" \
        && install_group "the browser test (tests/test_web.py)" "$BROWSER_PACKAGES"; then
    if have_chromium; then
        echo "install-test-deps: installed; chromium is $(command -v chromium || command -v chromium-browser)"
    else
        echo "install-test-deps: installed, but no chromium command found; the browser test will be skipped"
    fi
fi

# -- 3. ffmpeg ----------------------------------------------------------------------------------
if command -v ffmpeg >/dev/null 2>&1; then
    echo "install-test-deps: ffmpeg already present; nothing to do"
elif can_install "the restream tests (tests/test_restream.py)" "($FFMPEG_PACKAGES)" \
        && install_group "the restream tests (tests/test_restream.py)" "$FFMPEG_PACKAGES"; then
    if command -v ffmpeg >/dev/null 2>&1; then
        echo "install-test-deps: installed; ffmpeg is $(command -v ffmpeg)"
    else
        echo "install-test-deps: installed, but no ffmpeg command found; the restream tests will be skipped"
    fi
fi
exit 0
