#!/usr/bin/env bash
# Benchmark cgihost side by side with its peers in ONE run (absolute numbers
# on this machine are noisy; ratios within a run are what to quote).
#
# Uses ../shared/bench/peers.sh (wrk for load, curl -T for the 1 GiB upload,
# procmon for peak RSS of the whole process tree) with cgihost added as a peer.
#
#   scripts/bench.sh                      # CGI hello (C, sh) + 1 GiB upload vs lighttpd, nginx+fcgiwrap
#   scripts/bench.sh --quick              # 1 run, 3 s per test
#   PEERS="nginx caddy cgihost" WORKLOADS="static-1k static-1m" scripts/bench.sh   # static files
#   PEERS="lighttpd cgihost" WORKLOADS="cgi-c" scripts/bench.sh
#   RUNS=3 DURATION=20 scripts/bench.sh   # knobs: see ../shared/bench/peers.sh
#   SPAWN_BENCH=0 scripts/bench.sh        # skip the spawned-pool comparison
#
# Then scripts/bench-spawn.sh: FastCGI hello through `--spawn` (4 workers) vs
# lighttpd mod_fastcgi bin-path (max-procs 4), same C app, same wrk, one run
# (peers.sh has no spawned-pool workload).
#
# Results: target/bench/<timestamp>/results.md (+ raw wrk/upload tables,
# spawn-pool.md).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
[[ -f $SHARED/peers.sh ]] || { echo "bench: $SHARED/peers.sh not found (set SHARED_BENCH)" >&2; exit 1; }

pkgs=(wrk curl gcc nginx lighttpd caddy fcgiwrap spawn-fcgi iproute2)
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Honours CARGO_TARGET_DIR, like cargo itself.
cargo build --release --manifest-path "$ROOT/Cargo.toml"

work=$(mktemp -d /tmp/cgihost-bench.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp -r "$SHARED/peers.sh" "$SHARED/src" "$work/"
mkdir -p "$work/peers.d"
cp "$ROOT/scripts/bench/cgihost-peer.sh" "$work/peers.d/cgihost.sh"

export CGIHOST_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgihost
export PEERS=${PEERS:-"lighttpd nginx cgihost"}
export WORKLOADS=${WORKLOADS:-"cgi-c cgi-sh upload-cgi"}
export OUT=${OUT:-$ROOT/target/bench/$(date +%Y%m%d-%H%M%S)}
bash "$work/peers.sh" "$@"
if [[ ${SPAWN_BENCH:-1} != 0 ]]; then
    OUT=$OUT "$ROOT/scripts/bench-spawn.sh" || echo "bench: spawned-pool comparison failed" >&2
fi
echo "results: $OUT/results.md"
