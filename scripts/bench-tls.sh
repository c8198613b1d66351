#!/usr/bin/env bash
# Static files over HTTPS: cgihost (rustls) against nginx (OpenSSL), same
# certificate (ECDSA P-256, made here with openssl), same files, same wrk
# (HTTP/1.1 over TLS, keep-alive), alternating runs so load drift hits both.
# Neither writes an access log (as in ../shared/bench/peers.sh).
#
#   scripts/bench-tls.sh              # RUNS=4 DURATION=5 CONNS=64
#
# Prints a markdown table; raw wrk output goes to target/bench/tls-<time>/.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${RUNS:-4} DURATION=${DURATION:-5} CONNS=${CONNS:-64}

for p in wrk nginx openssl; do
    command -v "$p" >/dev/null || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -q && apt-get install -y -q --no-install-recommends wrk nginx openssl
        break
    }
done
cargo build --release --manifest-path "$ROOT/Cargo.toml"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgihost
OUT=$ROOT/target/bench/tls-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"

work=$(mktemp -d /tmp/cgihost-bench-tls.XXXXXX)
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
        listen 127.0.0.1:$NGINX_PORT ssl http2;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        root $work/www;
    }
}
CONF
nginx -c "$work/nginx.conf" -p "$work"
echo 'access_log = false' >"$work/cgihost.toml"
"$BIN" --bind 127.0.0.1 --port "$CGIHOST_PORT" --root "$work/www" --cgi-dir "$work/none" -q \
    --config "$work/cgihost.toml" --tls-cert "$work/cert.pem" --tls-key "$work/key.pem" \
    >"$work/logs/cgihost.log" 2>&1 &
pids+=("$!")
for port in $NGINX_PORT $CGIHOST_PORT; do
    ok=
    for _ in $(seq 50); do
        curl -skf "https://127.0.0.1:$port/1m.bin" -o /dev/null && { ok=1; break; }
        sleep 0.1
    done
    [[ -n $ok ]] || { echo "bench-tls: no 200 from port $port" >&2; exit 1; }
done

declare -A sum
for file in 1k.bin 1m.bin; do
    for run in $(seq "$RUNS"); do
        for server in nginx cgihost; do
            port=$NGINX_PORT; [[ $server == cgihost ]] && port=$CGIHOST_PORT
            f="$OUT/$server-$file-$run.txt"
            wrk -t2 -c"$CONNS" -d"${DURATION}s" "https://127.0.0.1:$port/$file" >"$f" 2>&1
            if grep -q 'Non-2xx\|Socket errors' "$f"; then
                echo "bench-tls: $server $file run $run had errors:" >&2; cat "$f" >&2; exit 1
            fi
            rps=$(awk '/Requests\/sec/ {print $2}' "$f")
            sum[$server-$file]=$(awk -v a="${sum[$server-$file]:-0}" -v b="$rps" 'BEGIN {print a + b}')
            echo "$server $file run $run: $rps req/s" >&2
        done
    done
done

echo "| file | nginx (OpenSSL) req/s | cgihost (rustls) req/s | cgihost / nginx |"
echo "|---|---:|---:|---:|"
for file in 1k.bin 1m.bin; do
    awk -v n="${sum[nginx-$file]}" -v c="${sum[cgihost-$file]}" -v r="$RUNS" -v f="$file" \
        'BEGIN {printf "| %s | %.0f | %.0f | %.2fx |\n", f, n / r, c / r, c / n}'
done
echo "raw: $OUT" >&2
