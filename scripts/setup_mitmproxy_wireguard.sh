#!/usr/bin/env bash
# mitmproxy-wireguard 0.1.23 (PyPI; the library of the mitmproxy-wireguard thesis) in a virtualenv at
# .venv-mitmproxy-wireguard/, for bench:dataplane's third server (bench/mitmproxy_wireguard_server.py),
# idempotently. The 0.1.23 wheel is abi3 for Python >= 3.7: Debian 12's Python 3.11 takes it as is.
#
#   bash scripts/setup_mitmproxy_wireguard.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VERSION=0.1.23
VENV=.venv-mitmproxy-wireguard
PYTHON=${PYTHON:-/usr/bin/python3}
if [ ! -x "$PYTHON" ]; then PYTHON=$(command -v python3); fi

installed() {
  "$VENV/bin/python" - "$VERSION" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version("mitmproxy_wireguard") == sys.argv[1] else 1)
PY
}

if ! installed; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setup_mitmproxy_wireguard: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
  fi
  echo "setup_mitmproxy_wireguard: pip install mitmproxy-wireguard==$VERSION"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input --only-binary=:all: \
    "mitmproxy-wireguard==$VERSION"
fi
"$VENV/bin/python" - <<'PY'
import platform
from importlib.metadata import version
print(f"mitmproxy-wireguard {version('mitmproxy_wireguard')}, Python {platform.python_version()}")
PY
