#!/usr/bin/env bash
# Build the Lava side venv: Python 3.9 (Debian bullseye's interpreter) + lava-nc 0.9.0.
#
# lava-nc 0.9/0.10 needs Python <= 3.10 (on 3.11 it fails at import: "mutable default ByteEncoder");
# Debian bookworm has no 3.10, but bullseye's python3.9 installs beside it. snnconv (Python 3.11)
# runs the exported network in this venv as a subprocess (snnconv/backends/lava_runner.py,
# numpy-only). Recipe: ../shared/LAVA.md, also in docs/lava.md.
#
# Idempotent: exits at once when the venv already imports lava. Needs root (apt) on Debian
# bookworm, unless a working python3.9 is already on PATH/under /usr/bin.
# Venv location: $SNNCONV_LAVA_VENV (default ~/.cache/snnconv/lava-venv).
set -euo pipefail

VENV="${SNNCONV_LAVA_VENV:-$HOME/.cache/snnconv/lava-venv}"
LAVA_VERSION=0.9.0

if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c "import lava.magma, lava.proc.lif.process" 2>/dev/null; then
    echo "lava venv ready: $VENV ($("$VENV/bin/python" -c 'import importlib.metadata as m; print("lava-nc", m.version("lava-nc"))'))"
    exit 0
fi

PY39=/usr/bin/python3.9
if ! "$PY39" -c "import sys" 2>/dev/null; then
    # 1. bullseye next to bookworm, same mirror as the bookworm entry
    if ! grep -rqs "bullseye" /etc/apt/sources.list.d/ /etc/apt/sources.list; then
        mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
        [ -n "$mirror" ] || mirror=http://deb.debian.org/debian
        cat > /etc/apt/sources.list.d/bullseye.sources <<EOF
Types: deb
URIs: $mirror
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
    apt-get update -qq
    # 2. the interpreter only (bullseye's python3.9-venv/-distutils conflict with bookworm's packages)
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3.9 >/dev/null
fi

# 3. distutils and lib2to3 for 3.9, unpacked without installing the packages
if ! "$PY39" -c "import distutils.util, lib2to3" 2>/dev/null; then
    tmp=$(mktemp -d) && chmod 755 "$tmp"  # apt-get download runs as _apt
    (cd "$tmp" && apt-get download -qq python3-distutils=3.9.2-1 python3-lib2to3=3.9.2-1)
    for deb in "$tmp"/*.deb; do dpkg -x "$deb" "$tmp/root"; done
    mkdir -p /usr/lib/python3.9/distutils /usr/lib/python3.9/lib2to3
    cp -rn "$tmp"/root/usr/lib/python3.9/distutils/. /usr/lib/python3.9/distutils/
    cp -rn "$tmp"/root/usr/lib/python3.9/lib2to3/. /usr/lib/python3.9/lib2to3/
    rm -rf "$tmp"
fi

# 4. a 3.9 venv made with virtualenv (the main Python's), 5. lava-nc
HOST_PY=$(command -v python3)
"$HOST_PY" -m virtualenv --version >/dev/null 2>&1 || "$HOST_PY" -m pip install -q virtualenv
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$HOST_PY" -m virtualenv -q -p "$PY39" "$VENV"
"$VENV/bin/pip" install -q "lava-nc==$LAVA_VERSION"
"$VENV/bin/python" -c "import lava.magma, lava.proc.lif.process"
echo "lava venv ready: $VENV (lava-nc $LAVA_VERSION)"
