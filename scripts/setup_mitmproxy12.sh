#!/usr/bin/env bash
# mitmproxy 12 for the bench's `mitmproxy12` server, idempotently. mitmproxy 12 needs Python >= 3.12 and
# this machine's Debian 12 has 3.11, so it lives in a minimal Debian trixie root (Python 3.13) made with
# debootstrap and cached between runs (default /var/cache/wirescope/trixie, ~25 s and ~220 MB the first
# time), with a virtualenv at /opt/mitmproxy inside it. bench/mitmproxy_server.ts runs its mitmdump there
# with chroot, in the server's network namespace.
#
# Every command inside the root runs with a clean environment (env -i): the host's PIP_* settings
# (find-links, cert paths) and PATH would otherwise leak in and name host paths. The host's locally added
# CA certificates (/usr/local/share/ca-certificates) are installed in the root too, so that pip there
# trusts what the host trusts.
#
#   bash scripts/setup_mitmproxy12.sh      (as root; prints the versions)
#   WIRESCOPE_TRIXIE_ROOT=DIR to put the root elsewhere
set -euo pipefail

MITMPROXY_VERSION=12.3.1
MITMPROXY_RS_VERSION=0.12.15
ROOT=${WIRESCOPE_TRIXIE_ROOT:-/var/cache/wirescope/trixie}
MIRROR=${WIRESCOPE_DEBIAN_MIRROR:-http://deb.debian.org/debian}
VENV=/opt/mitmproxy
CLEAN_ENV=(env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8)

if [ "$(id -u)" != 0 ]; then
  echo "setup_mitmproxy12: needs root (debootstrap, chroot)" >&2
  exit 1
fi

if ! command -v debootstrap >/dev/null; then
  echo "setup_mitmproxy12: installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends debootstrap
fi

# The root, made once: debootstrap into a temporary directory, renamed when complete.
if [ ! -x "$ROOT/usr/bin/python3" ] || [ ! -e "$ROOT/.wirescope-complete" ]; then
  echo "setup_mitmproxy12: debootstrap trixie (minbase) into $ROOT"
  mkdir -p "$(dirname "$ROOT")"
  rm -rf "$ROOT.partial"
  debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    trixie "$ROOT.partial" "$MIRROR" >/dev/null
  rm -rf "$ROOT"
  mv "$ROOT.partial" "$ROOT"
  touch "$ROOT/.wirescope-complete"
fi

# Runs a command in the root with /proc, /dev and /sys mounted, in a mount namespace of its own (so the
# mounts go away with it, whatever happens) and with a clean environment.
in_root() {
  unshare --mount --propagation private sh -c '
    root=$1; shift
    mount --bind /proc "$root/proc" && mount --rbind /dev "$root/dev" && mount --bind /sys "$root/sys" &&
      exec chroot "$root" "$@"' in_root "$ROOT" "${CLEAN_ENV[@]}" "$@"
}

installed() {
  [ -x "$ROOT$VENV/bin/mitmdump" ] &&
    in_root "$VENV/bin/python" - "$MITMPROXY_VERSION" "$MITMPROXY_RS_VERSION" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if (version("mitmproxy"), version("mitmproxy_rs")) == tuple(sys.argv[1:3]) else 1)
EOF
}

if ! installed; then
  # What pip needs from the host: name resolution and the host's own CAs.
  cp -L /etc/resolv.conf "$ROOT/etc/resolv.conf"
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "$ROOT/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
    in_root update-ca-certificates >/dev/null
  fi
  if [ ! -x "$ROOT$VENV/bin/python" ]; then
    echo "setup_mitmproxy12: creating $VENV in the root"
    in_root /usr/bin/python3 -m venv "$VENV"
  fi
  echo "setup_mitmproxy12: pip install mitmproxy==$MITMPROXY_VERSION in the root"
  in_root "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-input --only-binary=:all: \
    "mitmproxy==$MITMPROXY_VERSION" "mitmproxy_rs==$MITMPROXY_RS_VERSION"
fi

in_root "$VENV/bin/python" - <<'EOF'
import platform
from importlib.metadata import version
print(f"mitmproxy {version('mitmproxy')}, mitmproxy_rs {version('mitmproxy_rs')}, "
      f"Python {platform.python_version()} (Debian trixie root)")
EOF
