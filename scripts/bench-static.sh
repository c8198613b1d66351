#!/usr/bin/env bash
# Static files, cgihost against nginx (sendfile on, 2 workers, as in
# ../shared/bench/peers.sh), same files, same wrk (keep-alive), in
# alternating short runs (the order flips every run) so that load drift and
# CPU steal on a shared machine hit both alike. Neither writes an access log.
# The ratio column is the median of the per-run ratios. Because wrk shares
# the machine's cores with the server, req/s also depends on how much CPU
# each server wins from wrk; the table therefore also gives requests per
# second of the server's own CPU time (user + system, from /proc), which
# measures the work per request alone.
#
#   scripts/bench-static.sh           # plain HTTP: RUNS=6 DURATION=5 CONNS=64 FILES="1k.bin 1m.bin"
#   scripts/bench-static.sh --tls     # HTTPS: rustls vs OpenSSL, same ECDSA
#                                     # certificate (made here with openssl)
#
# Prints a markdown table; raw wrk output goes to target/bench/static-<time>/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-6} DURATION=${DURATION:-5} CONNS=${CONNS:-64}
TLS=0
[[ ${1:-} == --tls ]] && TLS=1
SCHEME=http; ((TLS)) && SCHEME=https

for p in wrk nginx openssl; do
    command -v "$p" >/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q && apt-get install -y -q --no-install-recommends wrk nginx openssl
        break
    }
done
cargo build --release --manifest-path "$ROOT/Cargo.toml"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgihost
OUT=$ROOT/target/bench/static-$SCHEME-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"

work=$(mktemp -d /tmp/cgihost-bench-static.XXXXXX)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    [[ -f $work/nginx.pid ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

# nginx's workers run as nobody: the files must be readable by everyone.
chmod 755 "$work"
mkdir -p "$work/www" "$work/logs"
head -c 1024 /dev/urandom >"$work/www/1k.bin"
head -c 1048576 /dev/urandom >"$work/www/1m.bin"
chmod 644 "$work/www/"*
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" 2>/dev/null

NGINX_PORT=18660 CGIHOST_PORT=18661
LISTEN="listen 127.0.0.1:$NGINX_PORT;"
((TLS)) && LISTEN="listen 127.0.0.1:$NGINX_PORT ssl http2;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;"
cat >"$work/nginx.conf" <<CONF
worker_processes 2;
pid $work/nginx.pid;
error_log $work/logs/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    sendfile on; tcp_nopush on; tcp_nodelay on;
    keepalive_requests 1000000;
    server {
        $LISTEN
        root $work/www;
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
echo 'access_log = false' >"$work/cgihost.toml"
tls_flags=()
((TLS)) && tls_flags=(--tls-cert "$work/cert.pem" --tls-key "$work/key.pem")
"$BIN" --bind 127.0.0.1 --port "$CGIHOST_PORT" --root "$work/www" --cgi-dir "$work/none" -q \
    --config "$work/cgihost.toml" "${tls_flags[@]}" \
    >"$work/logs/cgihost.log" 2>&1 &
pids+=("$!")
for port in $NGINX_PORT $CGIHOST_PORT; do
    ok=
    for _ in $(seq 50); do
        curl -skf "$SCHEME://127.0.0.1:$port/1m.bin" -o /dev/null && { ok=1; break; }
        sleep 0.1
    done
    [[ -n $ok ]] || { echo "bench-static: no 200 from port $port" >&2; exit 1; }
done

# CPU time (clock ticks, user + system) of a server's processes.
cpu_ticks() {
    local total=0 pid
    for pid in "$@"; do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo "$total"
}
nginx_workers=$(pgrep -P "$(cat "$work/nginx.pid")" | tr '\n' ' ')
HZ=$(getconf CLK_TCK)

declare -A sum
declare -A ratios
declare -A cpu_ratios
declare -A cpu_sum
declare -A p99s
for file in ${FILES:-1k.bin 1m.bin}; do
    for run in $(seq "$RUNS"); do
        order="nginx cgihost"; ((run % 2 == 0)) && order="cgihost nginx"
        declare -A rps=() per_cpu=()
        for server in $order; do
            port=$NGINX_PORT procs=$nginx_workers
            [[ $server == cgihost ]] && port=$CGIHOST_PORT procs=${pids[0]}
            f="$OUT/$server-$file-$run.txt"
            # shellcheck disable=SC2086 # procs is a list of pids
            before=$(cpu_ticks $procs)
            wrk --latency -t2 -c"$CONNS" -d"${DURATION}s" "$SCHEME://127.0.0.1:$port/$file" >"$f" 2>&1
            if grep -q 'Non-2xx\|Socket errors' "$f"; then
                echo "bench-static: $server $file run $run had errors:" >&2; cat "$f" >&2; exit 1
            fi
            rps[$server]=$(awk '/Requests\/sec/ {print $2}' "$f")
            # shellcheck disable=SC2086
            ticks=$(($(cpu_ticks $procs) - before))
            per_cpu[$server]=$(awk -v n="$(awk '/requests in/ {print $1}' "$f")" -v t="$ticks" -v hz="$HZ" \
                'BEGIN {printf "%.0f", n / (t / hz)}')
            cpu_sum[$server-$file]=$(awk -v a="${cpu_sum[$server-$file]:-0}" -v b="${per_cpu[$server]}" 'BEGIN {print a + b}')
            sum[$server-$file]=$(awk -v a="${sum[$server-$file]:-0}" -v b="${rps[$server]}" 'BEGIN {print a + b}')
            p99s[$server-$file]+="$(awk '$1 == "99%" {v = $2; if (v ~ /us$/) v = v / 1000; else if (v ~ /ms$/) v = v + 0; else v = v * 1000; print v}' "$f") "
            echo "$server $file run $run: ${rps[$server]} req/s, ${per_cpu[$server]} per CPU-second" >&2
        done
        ratios[$file]+="$(awk -v c="${rps[cgihost]}" -v n="${rps[nginx]}" 'BEGIN {printf "%.3f", c / n}') "
        cpu_ratios[$file]+="$(awk -v c="${per_cpu[cgihost]}" -v n="${per_cpu[nginx]}" 'BEGIN {printf "%.3f", c / n}') "
    done
done

what="plain HTTP/1.1, sendfile"; ((TLS)) && what="HTTPS: nginx with OpenSSL, cgihost with rustls"
echo "Static files, $what; wrk -t2 -c$CONNS, $RUNS alternating runs x ${DURATION}s each"
echo
echo "| file | nginx req/s (mean) | cgihost req/s (mean) | cgihost / nginx, per run | median | nginx req per CPU-s | cgihost req per CPU-s | per CPU-s ratio, median | p99 ms nginx / cgihost, median |"
echo "|---|---:|---:|---|---:|---:|---:|---:|---|"
median() { tr ' ' '\n' <<<"$1" | sort -n | awk '{a[NR] = $1} END {print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
for file in ${FILES:-1k.bin 1m.bin}; do
    per_run=${ratios[$file]% }
    awk -v n="${sum[nginx-$file]}" -v c="${sum[cgihost-$file]}" -v r="$RUNS" -v f="$file" \
        -v p="$per_run" -v m="$(median "$per_run")" \
        -v pn="$(median "${p99s[nginx-$file]% }")" -v pc="$(median "${p99s[cgihost-$file]% }")" \
        -v nc="${cpu_sum[nginx-$file]}" -v cc="${cpu_sum[cgihost-$file]}" -v mc="$(median "${cpu_ratios[$file]% }")" \
        'BEGIN {printf "| %s | %.0f | %.0f | %s | %.2fx | %.0f | %.0f | %.2fx | %.1f / %.1f |\n", f, n / r, c / r, p, m, nc / r, cc / r, mc, pn, pc}'
done
echo "raw: $OUT" >&2
