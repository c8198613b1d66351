#!/usr/bin/env bash
# What site rules cost the static 1 KiB path: the same release binary with
# no rules and with 20 rules of each kind ([[redirect]], [[rewrite]],
# [[access]], [[auth]]; half prefixes, half regexes, none matching the file),
# pinned like ../shared/bench/pinned.sh (server on CPU 0, wrk on CPU 1),
# alternating round by round. Prints median req/s and p99 of each and the
# ratio. Then, for the peer context, ../shared/bench/pinned.sh runs with the
# rules config (BIN wrapper) when PEERS=1.
#
#   scripts/bench-rules.sh                 # ROUNDS=5 DURATION=5
#   ROUNDS=8 DURATION=4 PEERS=1 scripts/bench-rules.sh
#
# Needs wrk and apache2-utils (htpasswd). Loopback only.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${ROUNDS:-5}; DURATION=${DURATION:-5}; CONNS=${CONNS:-64}
for p in wrk apache2-utils; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
        { DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$p"; }
done
cargo build --release --manifest-path "$ROOT/Cargo.toml"
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgihost
D=$(mktemp -d /tmp/bench-rules.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done; wait 2>/dev/null; rm -rf "$D"; }
trap cleanup EXIT
mkdir -p "$D/www" "$D/empty"
head -c 1024 /dev/urandom >"$D/www/1k.bin"
htpasswd -cbB "$D/htpasswd" alice secret 2>/dev/null

printf 'access_log = false\n' >"$D/plain.toml"
{
    printf 'access_log = false\n'
    for i in $(seq 0 19); do
        # m KIND: a prefix for even i, a regex for odd i; one namespace per kind.
        m() { if ((i % 2)); then printf '~^/%s%s/(.*)$' "$1" "$i"; else printf '/%s%s/' "$1" "$i"; fi; }
        printf '[[redirect]]\nmatch = "%s"\nto = "/n%s/"\nstatus = 301\n' "$(m redirect)" "$i"
        printf '[[rewrite]]\nmatch = "%s"\nto = "/w%s/"\n' "$(m rewrite)" "$i"
        printf '[[access]]\nmatch = "%s"\ndeny = true\nallow = ["10.0.0.0/8"]\n' "$(m access)"
        printf "[[auth]]\nmatch = '%s'\nrealm = \"r%s\"\nhtpasswd = \"%s/htpasswd\"\n" "$(m auth)" "$i" "$D"
    done
} >"$D/rules.toml"
"$BIN" --check-config --config "$D/rules.toml" --root "$D/www" --cgi-dir "$D/empty" >/dev/null

start() { # name port config
    (cd "$D" && exec env TOKIO_WORKER_THREADS=1 taskset -c 0 "$BIN" --port "$2" --bind 127.0.0.1 \
        --root www --cgi-dir empty --config "$3" -q) >>"$D/servers.log" 2>&1 &
    PIDS+=($!)
}
start plain 19201 plain.toml
start rules 19202 rules.toml
for p in 19201 19202; do
    for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && break; sleep 0.1; done
done
curl -fsS -o /dev/null "http://127.0.0.1:19202/1k.bin"
curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:19202/redirect0/x" | grep -q 301 ||
    { echo "bench-rules: the rules config does not answer its redirect" >&2; exit 1; }

declare -A PORT=([plain]=19201 [rules]=19202)
echo -e "round\tconfig\trps\tp99_ms" >"$D/results.tsv"
for r in $(seq "$ROUNDS"); do
    order=(plain rules); ((r % 2)) && order=(rules plain)
    for n in "${order[@]}"; do
        out=$(taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:${PORT[$n]}/1k.bin" 2>&1)
        rps=$(awk '/Requests\/sec/{print $2}' <<<"$out")
        p99=$(awk '$1=="99%"{v=$2; if (v ~ /us$/) {sub(/us/,"",v); v/=1000} else if (v ~ /ms$/) {sub(/ms/,"",v)} else if (v ~ /s$/) {sub(/s/,"",v); v*=1000}; print v}' <<<"$out")
        echo -e "$r\t$n\t${rps:-0}\t${p99:-NA}" >>"$D/results.tsv"
    done
done
python3 - "$D/results.tsv" <<'EOF'
import csv, sys, statistics as st
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
med = {n: st.median(float(r["rps"]) for r in rows if r["config"] == n) for n in ("plain", "rules")}
p99 = {n: st.median(float(r["p99_ms"]) for r in rows if r["config"] == n and r["p99_ms"] != "NA") for n in ("plain", "rules")}
pairs = {}
for r in rows:
    pairs.setdefault(r["round"], {})[r["config"]] = float(r["rps"])
ratios = sorted(p["rules"] / p["plain"] for p in pairs.values() if p.get("plain"))
print("| static 1 KiB, pinned | no rules | 80 rules (20 of each kind) | rules / none |")
print("|---|---:|---:|---:|")
print(f"| req/s, median of {len(pairs)} | {med['plain']:,.0f} | {med['rules']:,.0f} | {med['rules']/med['plain']:.3f} (rounds {ratios[0]:.3f}–{ratios[-1]:.3f}) |")
print(f"| p99 ms | {p99['plain']:.2f} | {p99['rules']:.2f} | |")
EOF
