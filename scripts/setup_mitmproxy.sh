#!/usr/bin/env bash
# Installs mitmproxy (for the benchmark's third server, `mitmdump --mode wireguard`) into a
# virtualenv at .venv-mitmproxy/ in the repo, idempotently: only what is missing is installed.
#
# The pin is the newest mitmproxy that installs on Debian 12's Python 3.11: mitmproxy 11.1.0 and
# later require Python >= 3.12. Its WireGuard mode comes from mitmproxy_rs (Rust, via PyO3), taken
# as a prebuilt manylinux wheel only (--only-binary), so no Rust build ever happens here.
#
#   bash scripts/setup_mitmproxy.sh      then: .venv-mitmproxy/bin/mitmdump --version
set -euo pipefail
cd "$(dirname "$0")/.."

MITMPROXY_VERSION=11.0.2
MITMPROXY_RS_VERSION=0.10.7
VENV=.venv-mitmproxy
# Debian's own Python (a pyenv or other python3 earlier on PATH is not what the venv should use).
PYTHON=${PYTHON:-/usr/bin/python3}
if [ ! -x "$PYTHON" ]; then PYTHON=$(command -v python3); fi

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

# venv needs ensurepip, which Debian ships separately (python3-venv); wg makes the keys.
missing=()
if ! "$PYTHON" -c 'import ensurepip, venv' 2>/dev/null; then missing+=(python3-venv); fi
if ! command -v wg >/dev/null; then missing+=(wireguard-tools); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup_mitmproxy: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

installed() {
  [ -x "$VENV/bin/mitmdump" ] &&
    "$VENV/bin/python" - "$MITMPROXY_VERSION" "$MITMPROXY_RS_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if (version("mitmproxy"), version("mitmproxy_rs")) == tuple(sys.argv[1:3]) else 1)
EOF
}

if ! installed; then
  if [ ! -x "$VENV/bin/python" ]; then
    echo "setup_mitmproxy: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
  fi
  echo "setup_mitmproxy: pip install mitmproxy==$MITMPROXY_VERSION"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    --only-binary=mitmproxy_rs,mitmproxy-rs,cryptography \
    "mitmproxy==$MITMPROXY_VERSION" "mitmproxy_rs==$MITMPROXY_RS_VERSION"
fi

"$VENV/bin/python" - <<'EOF'
import platform
from importlib.metadata import version
print(f"mitmproxy {version('mitmproxy')}, mitmproxy_rs {version('mitmproxy_rs')}, "
      f"Python {platform.python_version()}")
EOF
