#!/usr/bin/env bash
# Spawned FastCGI pools: cgihost --spawn (4 workers) against lighttpd
# mod_fastcgi with "bin-path" ("max-procs" => 4), in ONE run, same app (a C
# libfcgi hello, scripts/bench/hello-fcgi.c), same client:
#   wrk -t2 -c32 -d10s --latency, RUNS rounds alternating the servers.
# Prints a markdown table (req/s, p99) and the cgihost/lighttpd ratio;
# writes it to $OUT/spawn-pool.md when OUT is set.
#
#   scripts/bench-spawn.sh                 # RUNS=2 DURATION=10 CONNS=32 THREADS=2
#
# Starts both servers itself on 127.0.0.1 (ports BASE_PORT+1, +2), each in
# its own session, and stops exactly those sessions at exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-2} DURATION=${DURATION:-10} CONNS=${CONNS:-32} THREADS=${THREADS:-2} WARMUP=${WARMUP:-2}
BASE_PORT=${BASE_PORT:-18190}
CG_PORT=$((BASE_PORT + 1)) LT_PORT=$((BASE_PORT + 2))

missing=()
for p in wrk lighttpd gcc libfcgi-dev curl; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
cargo build --release --manifest-path "$ROOT/Cargo.toml"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgihost

work=$(mktemp -d /tmp/cgihost-bench-spawn.XXXXXX)
sessions=()
cleanup() {
    local s i
    for s in "${sessions[@]}"; do kill -TERM -- "-$s" 2>/dev/null || true; done
    for i in 1 2 3 4 5 6 7 8 9 10; do
        local alive=0
        for s in "${sessions[@]}"; do kill -0 -- "-$s" 2>/dev/null && alive=1; done
        ((alive)) || break
        sleep 0.3
    done
    for s in "${sessions[@]}"; do kill -KILL -- "-$s" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT
launch() { # LOG CMD... -> new session, remembered for cleanup
    local logf=$1; shift
    setsid "$@" >"$logf" 2>&1 </dev/null &
    sessions+=("$!")
}
wait_ok() { # URL
    local i
    for i in $(seq 50); do
        [[ $(curl -s "$1" 2>/dev/null) == hello ]] && return 0
        sleep 0.2
    done
    echo "bench-spawn: no hello from $1" >&2; return 1
}

gcc -O2 -o "$work/hello.fcgi" "$ROOT/scripts/bench/hello-fcgi.c" -lfcgi
mkdir -p "$work/www"

launch "$work/cgihost.log" "$BIN" --bind 127.0.0.1 --port "$CG_PORT" --root "$work/www" \
    --cgi-dir "$work/none" -q --spawn "/hello=$work/hello.fcgi" --workers 4
cat >"$work/lighttpd.conf" <<CONF
server.document-root = "$work/www"
server.bind = "127.0.0.1"
server.port = $LT_PORT
server.errorlog = "$work/lighttpd-error.log"
server.max-keep-alive-requests = 65535
server.modules = ( "mod_fastcgi" )
fastcgi.server = ( "/hello" => ((
    "socket" => "$work/lighttpd-hello.sock",
    "bin-path" => "$work/hello.fcgi",
    "max-procs" => 4,
    "check-local" => "disable"
)) )
CONF
launch "$work/lighttpd.log" lighttpd -D -f "$work/lighttpd.conf"
wait_ok "http://127.0.0.1:$CG_PORT/hello"
wait_ok "http://127.0.0.1:$LT_PORT/hello"

declare -A url=([cgihost]="http://127.0.0.1:$CG_PORT/hello" [lighttpd]="http://127.0.0.1:$LT_PORT/hello")
declare -A label=([cgihost]="cgihost --spawn, 4 workers" [lighttpd]="lighttpd $(lighttpd -v 2>&1 | head -1 | awk '{print $1}') mod_fastcgi bin-path, max-procs 4")
declare -A sum
rows=()
for s in cgihost lighttpd; do wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP"s "${url[$s]}" >/dev/null; done
for ((r = 1; r <= RUNS; r++)); do
    for s in cgihost lighttpd; do
        out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION"s --latency "${url[$s]}")
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        bad=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
        sum[$s]=$(awk -v a="${sum[$s]:-0}" -v b="$rps" 'BEGIN {print a + b}')
        rows+=("| $r | ${label[$s]} | $rps | $p99 | ${bad:-none} |")
    done
done
ratio=$(awk -v a="${sum[cgihost]}" -v b="${sum[lighttpd]}" 'BEGIN {printf "%.2f", a / b}')
table=$(
    echo "FastCGI hello (C, libfcgi), wrk -t$THREADS -c$CONNS -d${DURATION}s, $RUNS runs, $(nproc) cores"
    echo
    echo "| run | server | req/s | p99 | errors |"
    echo "| --- | --- | ---: | ---: | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "mean req/s: cgihost $(awk -v a="${sum[cgihost]}" -v n="$RUNS" 'BEGIN {printf "%.0f", a / n}'), lighttpd $(awk -v a="${sum[lighttpd]}" -v n="$RUNS" 'BEGIN {printf "%.0f", a / n}'); ratio cgihost/lighttpd = ${ratio}x"
)
echo "$table"
if [[ -n ${OUT:-} ]]; then mkdir -p "$OUT" && echo "$table" >"$OUT/spawn-pool.md"; fi
