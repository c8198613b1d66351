#!/usr/bin/env bash
# Spawned FastCGI pools: cgihost --spawn (4 workers) against lighttpd
# mod_fastcgi with "bin-path" ("max-procs" => 4), in ONE run, same app (a C
# libfcgi hello, scripts/bench/hello-fcgi.c), same client:
#   wrk -t2 -c32 -d10s --latency, RUNS rounds alternating the servers.
# cgihost runs twice: with its default runtime (one tokio worker thread per
# core) and with TOKIO_WORKER_THREADS=1 — like-for-like with lighttpd's single
# event loop when wrk takes the other core of a 2-core machine.
# Prints a markdown table (req/s, p99) and the cgihost/lighttpd ratios;
# writes it to $OUT/spawn-pool.md when OUT is set.
#
#   scripts/bench-spawn.sh                 # RUNS=2 DURATION=10 CONNS=32 THREADS=2
#
# Starts the servers itself on 127.0.0.1 (ports BASE_PORT+1..3), each in
# its own session, and stops exactly those sessions at exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-2} DURATION=${DURATION:-10} CONNS=${CONNS:-32} THREADS=${THREADS:-2} WARMUP=${WARMUP:-2}
BASE_PORT=${BASE_PORT:-18190}
CG_PORT=$((BASE_PORT + 1)) LT_PORT=$((BASE_PORT + 2)) C1_PORT=$((BASE_PORT + 3))

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

# No access log, like the lighttpd config below (it loads no mod_accesslog).
echo 'access_log = false' >"$work/cgihost.toml"
cgihost_args=(--bind 127.0.0.1 --config "$work/cgihost.toml" --root "$work/www" --cgi-dir "$work/none" -q --spawn "/hello=$work/hello.fcgi" --workers 4)
launch "$work/cgihost.log" "$BIN" --port "$CG_PORT" "${cgihost_args[@]}"
launch "$work/cgihost-1t.log" env TOKIO_WORKER_THREADS=1 "$BIN" --port "$C1_PORT" "${cgihost_args[@]}"
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
servers=(cgihost cgihost1 lighttpd)
declare -A url=([cgihost]="http://127.0.0.1:$CG_PORT/hello" [cgihost1]="http://127.0.0.1:$C1_PORT/hello"
    [lighttpd]="http://127.0.0.1:$LT_PORT/hello")
declare -A label=([cgihost]="cgihost --spawn, 4 workers ($(nproc) runtime threads, default)"
    [cgihost1]="cgihost --spawn, 4 workers (TOKIO_WORKER_THREADS=1)"
    [lighttpd]="$(lighttpd -v 2>&1 | head -1 | awk '{print $1}') mod_fastcgi bin-path, max-procs 4")
for s in "${servers[@]}"; do wait_ok "${url[$s]}"; done
declare -A sum
rows=()
for s in "${servers[@]}"; do wrk -t"$THREADS" -c"$CONNS" -d"$WARMUP"s "${url[$s]}" >/dev/null; done
for ((r = 1; r <= RUNS; r++)); do
    for s in "${servers[@]}"; do
        out=$(wrk -t"$THREADS" -c"$CONNS" -d"$DURATION"s --latency "${url[$s]}")
        rps=$(awk '/^Requests\/sec/ {print $2}' <<<"$out")
        p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
        bad=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' <<<"$out")
        sum[$s]=$(awk -v a="${sum[$s]:-0}" -v b="$rps" 'BEGIN {print a + b}')
        rows+=("| $r | ${label[$s]} | $rps | $p99 | ${bad:-none} |")
    done
done
mean() { awk -v a="${sum[$1]}" -v n="$RUNS" 'BEGIN {printf "%.0f", a / n}'; }
ratio() { awk -v a="${sum[$1]}" -v b="${sum[lighttpd]}" 'BEGIN {printf "%.2f", a / b}'; }
table=$(
    echo "FastCGI hello (C, libfcgi), wrk -t$THREADS -c$CONNS -d${DURATION}s, $RUNS runs, $(nproc) cores"
    echo
    echo "| run | server | req/s | p99 | errors |"
    echo "| --- | --- | ---: | ---: | --- |"
    printf '%s\n' "${rows[@]}"
    echo
    echo "mean req/s: cgihost $(mean cgihost), cgihost 1 thread $(mean cgihost1), lighttpd $(mean lighttpd)"
    echo "ratio to lighttpd: cgihost $(ratio cgihost)x, cgihost 1 thread $(ratio cgihost1)x"
)
echo "$table"
if [[ -n ${OUT:-} ]]; then mkdir -p "$OUT" && echo "$table" >"$OUT/spawn-pool.md"; fi
