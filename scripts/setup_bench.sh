#!/usr/bin/env bash
# Everything `deno task bench` needs, idempotently: the Debian packages of scripts/setup.sh (which
# include wrk, iperf3, nginx, wireguard-go, and h2load from nghttp2-client for the HTTP/2 rows), mitmproxy
# 11 in .venv-mitmproxy/ (scripts/setup_mitmproxy.sh), mitmproxy 12 in a cached Debian trixie root
# (scripts/setup_mitmproxy12.sh), mitmproxy-wireguard for bench:dataplane
# (scripts/setup_mitmproxy_wireguard.sh) and matplotlib in .venv-mitmproxy, for bench/chart.py. Cheap when
# all is there already.
#
#   bash scripts/setup_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MATPLOTLIB_VERSION=3.11.2
VENV=.venv-mitmproxy

bash scripts/setup.sh >/dev/null
bash scripts/setup_mitmproxy.sh >/dev/null
bash scripts/setup_mitmproxy12.sh >/dev/null
bash scripts/setup_mitmproxy_wireguard.sh >/dev/null
command -v h2load >/dev/null || {
  echo "setup_bench: h2load is missing (Debian package nghttp2-client, in scripts/setup.sh)" >&2
  exit 1
}

if ! "$VENV/bin/python" - "$MATPLOTLIB_VERSION" <<'PY' 2>/dev/null; then
import sys
from importlib.metadata import version
sys.exit(0 if version("matplotlib") == sys.argv[1] else 1)
PY
  echo "setup_bench: pip install matplotlib==$MATPLOTLIB_VERSION"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input \
    --only-binary=:all: "matplotlib==$MATPLOTLIB_VERSION"
fi
