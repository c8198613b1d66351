#!/usr/bin/env bash
# Memory per idle connection, cgihost beside nginx and lighttpd in one run:
# N silent connections, N keep-alive connections after one GET, N TLS
# connections after one GET and N HTTP/2 (prior knowledge) connections after
# one GET; RSS before, with them open, per connection, and 10 s after they
# all closed. The work is done by scripts/bench/idle.py.
#
#   scripts/bench-idle.sh                       # CONNS=10000, all kinds, all servers
#   CONNS=2000 KINDS="silent keep-alive" SERVERS=cgihost scripts/bench-idle.sh
#   CGIHOST_BIN=target/release/cgihost scripts/bench-idle.sh   # skip the build
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
missing=()
for p in nginx lighttpd lighttpd-mod-openssl openssl python3; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [[ -z ${CGIHOST_BIN:-} ]]; then
    cargo build --release --manifest-path "$ROOT/Cargo.toml"
    CGIHOST_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgihost
fi
# 10,000 connections need more descriptors than the usual 1,024, in the
# servers (started from here) and the client alike.
ulimit -n "$(ulimit -Hn)"
CGIHOST_BIN=$(realpath "$CGIHOST_BIN") exec python3 "$ROOT/scripts/bench/idle.py"
