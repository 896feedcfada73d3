#!/usr/bin/env bash
# Set up (or reuse) the virtualenv at .venv, then run the demo or the test suite.
#   ./run.sh demo   - writes a small ImageFolder of real photographs and pre-trains MOKD on it (CPU, ~3 min)
#   ./run.sh test   - the test suite (GPU tests skip without CUDA)
# Works on a fresh Debian/Ubuntu machine with Python 3.11+ as root or with sudo.
set -euo pipefail
cd "$(dirname "$0")"

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

setup() {
    if ! command -v python3 >/dev/null || ! python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
        echo "mokd-fast needs Python 3.11 or newer as python3 (found: $(python3 --version 2>&1 || echo none))" >&2
        exit 1
    fi
    if [ ! -x .venv/bin/python ]; then
        if ! python3 -m venv .venv 2>/dev/null; then
            rm -rf .venv
            as_root apt-get update -qq
            as_root apt-get install -y -qq python3-venv python3-pip
            python3 -m venv .venv
        fi
    fi
    # FFCV compiles against OpenCV and libjpeg-turbo from the system.
    if ! pkg-config --exists opencv4 libturbojpeg 2>/dev/null; then
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libturbojpeg0-dev libopencv-dev pkg-config
    fi
    # Reinstall only when the requirements or pyproject.toml changed since the last set-up.
    local stamp=.venv/.mokd-fast-installed want
    want=$(cat requirements.txt requirements-nodeps.txt pyproject.toml | sha256sum | cut -d' ' -f1)
    if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
        .venv/bin/python -m pip install -q --upgrade pip
        .venv/bin/python -m pip install -q -r requirements.txt
        .venv/bin/python -m pip install -q --no-deps -r requirements-nodeps.txt
        .venv/bin/python -m pip install -q --no-deps -e .
        echo "$want" > "$stamp"
    fi
}

case "${1:-}" in
    demo) setup; shift; exec .venv/bin/python -m mokd_fast.demo "$@" ;;
    test) setup; shift; exec .venv/bin/python -m pytest -q "$@" ;;
    *) echo "usage: ./run.sh demo|test [args]" >&2; exit 2 ;;
esac
