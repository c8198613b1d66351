#!/usr/bin/env bash
# Upload offloading throughput: a 1 GiB file POSTed (a) as a raw streamed body
# to a CGI that reads stdin, and (b) as multipart/form-data offloaded by
# cgihost into --upload-dir (parsed, written to disk, sha256'd) for a CGI that
# gets the description. Prints MB/s for each, the ratio, and cgihost's VmHWM.
#   scripts/bench-offload.sh [RUNS]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUNS=${1:-2}
PORT=${PORT:-18995}
cargo build --release --manifest-path "$ROOT/Cargo.toml" >&2
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgihost
work=$(mktemp -d /tmp/cgihost-offload.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$work"' EXIT
mkdir -p "$work/cgi-bin" "$work/www" "$work/uploads"
gcc -O2 -o "$work/cgi-bin/sink" "$ROOT/../shared/bench/src/upload.c"
cp "$ROOT/cgi-bin/upload.sh" "$work/cgi-bin/described.sh"
data=${UPLOAD_FILE:-/tmp/bench-upload-1g.bin}
[[ -f $data ]] || head -c 1073741824 /dev/urandom > "$data"
size=$(stat -c %s "$data")
"$BIN" --bind 127.0.0.1 --port "$PORT" -q --root "$work/www" --cgi-dir "$work/cgi-bin" \
    --upload-dir "/cgi-bin/described.sh=$work/uploads" > /dev/null 2>&1 &
pid=$!
sleep 0.5
mbps() { awk -v s="$size" -v t="$1" 'BEGIN { printf "%.0f", s / t / 1e6 }'; }
echo "| run | raw stream to CGI stdin, MB/s | multipart offloaded to --upload-dir, MB/s | ratio |"
echo "|---|---:|---:|---:|"
for r in $(seq "$RUNS"); do
    t1=$(curl -sS -o /dev/null -w '%{time_total}' -X POST -T "$data" -H 'Expect:' \
        -H 'Content-Type: application/octet-stream' "http://127.0.0.1:$PORT/cgi-bin/sink")
    t2=$(curl -sS -o /dev/null -w '%{time_total}' -H 'Expect:' -F "file=@$data" \
        "http://127.0.0.1:$PORT/cgi-bin/described.sh")
    a=$(mbps "$t1"); b=$(mbps "$t2")
    echo "| $r | $a | $b | $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.2f", b / a }') |"
done
echo
echo "cgihost VmHWM: $(awk '/VmHWM/ {print $2, $3}' /proc/$pid/status)"
