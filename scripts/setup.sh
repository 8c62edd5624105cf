#!/usr/bin/env bash
# Installs everything wirescope's build and tests need, idempotently: Debian packages (the Rust
# toolchain that builds std for wasm, clang for ring's C code, WireGuard tools and servers for the
# end-to-end rig) and Deno from npm (pinned in package.json). Safe to run again; it only installs
# what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(
  # wasm build: Debian's rustc/cargo that can build std from source, its sources and linker
  rustc-web cargo-web rust-web-src rust-web-llvm llvm-22 lld-22 clang-19 wasi-libc
  # end-to-end rig: a real WireGuard client, namespaces, and clients/servers to talk to
  wireguard-go wireguard-tools iproute2 iputils-ping curl iperf3 nginx-light openssl
  # dns and socks5 mode tests (tests/socks5_dns_test.ts): dig, and Python for a UDP ASSOCIATE client
  bind9-dnsutils python3
  # benchmark (deno task bench): an HTTP load generator, and venv for mitmproxy and matplotlib
  wrk python3-venv
  # HTTP/2 interop tests (src/proxy/http2/interop_test.ts): nghttp, a client on nghttp2
  nghttp2-client
  # browser checks (tests/chromium_h2_test.ts, tests/quic_e2e_test.ts): headless Chromium, and
  # certutil to make it trust the proxy's CA in a throwaway NSS database
  chromium libnss3-tools
  # web UI tests (tests/web_wireguard_test.ts): zbarimg decodes the peers' QR codes
  zbar-tools
  # upstream chaining tests (tests/upstream_reverse_e2e_test.ts): a real HTTP proxy and SOCKS5 server;
  # squid for absolute-form plain HTTP and TLS to the upstream (tests/upstream_squid_e2e_test.ts)
  tinyproxy microsocks squid
)
# Node runs npm, which brings Deno; a Node from elsewhere (as on this project's machines) is kept.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then packages+=(nodejs npm); fi

sudo=""
if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -q
  $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Deno (and type packages) from npm, as locked. Scripts are skipped on purpose: Deno's
# postinstall would point node_modules/.bin/deno at the raw binary, which `deno task` then
# mistakes for a JavaScript file; the package's bin.cjs launcher works for npx and deno task.
# (`npm ci` is not used: npm 11 rejects this lockfile for lacking other platforms' binaries.)
if [ ! -e node_modules/.bin/deno ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: npm install"
  npm install --ignore-scripts --no-audit --no-fund --loglevel=error
fi

# HTTP/2 conformance (src/proxy/http2/h2spec_test.ts): h2spec is a Go module, built once with the
# machine's Go toolchain into Go's bin directory, at a pinned version.
if command -v go >/dev/null && [ ! -x "$(go env GOPATH)/bin/h2spec" ]; then
  echo "setup: go install h2spec"
  go install github.com/summerwind/h2spec/cmd/h2spec@v2.2.1+incompatible
fi
# gRPC end to end (tests/grpc_e2e_test.ts): grpcio, the reference C-core implementation, as a
# prebuilt wheel from PyPI into .venv-grpc/ on Debian's Python (python3-venv above), pinned.
GRPCIO_VERSION=1.85.3
if ! .venv-grpc/bin/python -c "import grpc, sys; sys.exit(grpc.__version__ != '$GRPCIO_VERSION')" 2>/dev/null; then
  echo "setup: grpcio $GRPCIO_VERSION into .venv-grpc"
  [ -x .venv-grpc/bin/python ] || /usr/bin/python3 -m venv .venv-grpc
  .venv-grpc/bin/pip install -q --disable-pip-version-check --only-binary=:all: "grpcio==$GRPCIO_VERSION"
fi
node_modules/.bin/deno --version | head -n1
