#!/usr/bin/env bash
# A labkit every user of this machine can run (labs without root, README "Labs without root"), as root:
#   scripts/rootless-venv.sh [DEST]     default DEST: /opt/labkit-rootless
# A copy of this checkout (which may sit in a folder only root can read) goes to DEST/src, and a venv on
# Debian's /usr/bin/python3 (the machine's default python3 may be one only root can run) gets it installed,
# editable from that copy so templates/ and the servers' launch paths are found. Running it again refreshes the copy.
set -euo pipefail
cd "$(dirname "$0")/.."
dest="${1:-/opt/labkit-rootless}"
python=/usr/bin/python3
umask 022
mkdir -p "$dest/src"
rm -rf "$dest/src/labkit" "$dest/src/templates" "$dest/src/topologies"
cp -r labkit templates topologies pyproject.toml README.md "$dest/src/"
find "$dest/src" -name __pycache__ -prune -exec rm -rf {} +
[ -x "$dest/bin/python" ] || "$python" -m venv "$dest"
if ! "$dest/bin/python" -I -c "import labkit, sys; sys.exit(labkit.__file__ != '$dest/src/labkit/__init__.py')" 2>/dev/null; then
  "$dest/bin/pip" install -q --disable-pip-version-check -e "$dest/src"
fi
# pytest: the labkit pytest plugin works without root too (the rootless tests run it as a user)
"$dest/bin/python" -c "import pytest" 2>/dev/null ||
  "$dest/bin/pip" install -q --disable-pip-version-check pytest
"$dest/bin/python" -m compileall -q "$dest/src/labkit" >/dev/null
chmod -R a+rX "$dest"
