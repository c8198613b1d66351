#!/usr/bin/env bash
# What each request costs the server's core, by kernel counters: system
# calls, context switches, CPU migrations and wakeups per request, for
# cgihost, nginx and lighttpd with their php-fpm (or static files).
#
# Runs ../shared/bench/pinned.sh (each server and its php-fpm pinned to
# CPU 0, wrk on CPU 1) with each wrk run wrapped in `perf stat -a -C 0`:
# the counts are everything CPU 0 did meanwhile, the server and its
# backend together, divided by the requests wrk completed.
#
#   scripts/bench-profile.sh                            # PHP hello, 3 rounds of 5 s
#   WORKLOADS="static-1k fcgi-php" ROUNDS=1 scripts/bench-profile.sh
#
# Needs perf (linux-perf) besides pinned.sh's packages.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${SHARED_BENCH:-$ROOT/../shared/bench}
command -v perf >/dev/null || {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q && apt-get install -y -q --no-install-recommends linux-perf
}
cargo build --release --manifest-path "$ROOT/Cargo.toml"
work=$(mktemp -d /tmp/cgihost-profile.XXXXXX)
trap 'rm -rf "$work"' EXIT
events=raw_syscalls:sys_enter,context-switches,cpu-migrations,sched:sched_wakeup
# The same harness, with perf around wrk and wrk's output kept.
sed -e "s|out=\$(taskset -c \"\$WRK_CPU\" wrk|out=\$(perf stat -x, -o \"$work/\$n.\$w.\$r.perf\" -a -C \"\$SERVER_CPU\" -e $events -- taskset -c \"\$WRK_CPU\" wrk|" \
    -e "s|^\( *\)rps=\$(awk|\1printf '%s\\\\n' \"\$out\" >\"$work/\$n.\$w.\$r.wrk\"; rps=\$(awk|" \
    "$SHARED/pinned.sh" >"$work/pinned.sh"
grep -q "perf stat" "$work/pinned.sh" || { echo "bench-profile: pinned.sh changed shape" >&2; exit 1; }
export CGIHOST_BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/cgihost
WORKLOADS=${WORKLOADS:-fcgi-php} ROUNDS=${ROUNDS:-3} DURATION=${DURATION:-5} bash "$work/pinned.sh"
python3 - "$work" <<'EOF'
import glob, os, re, statistics as st, sys
rows = {}
for wrk in glob.glob(os.path.join(sys.argv[1], "*.wrk")):
    base = wrk[:-4]
    server, workload, _ = os.path.basename(base).split(".")
    text = open(wrk).read()
    m = re.search(r"(\d+) requests in", text)
    if not m or not os.path.exists(base + ".perf"):
        continue
    n = int(m.group(1))
    counts = {}
    for line in open(base + ".perf"):
        f = line.strip().split(",")
        if len(f) > 2 and f[0].replace(".", "").isdigit():
            counts[f[2]] = float(f[0])
    rows.setdefault((workload, server), []).append({k: v / n for k, v in counts.items()})
names = ["raw_syscalls:sys_enter", "context-switches", "cpu-migrations", "sched:sched_wakeup"]
print("\nPer request, on the server's core (server + backend), median of rounds:\n")
print("| workload | server | system calls | context switches | CPU migrations | wakeups |")
print("|---|---|---:|---:|---:|---:|")
for (w, s), rs in sorted(rows.items()):
    cells = [f"{st.median(r.get(k, 0) for r in rs):.2f}" for k in names]
    print(f"| {w} | {s} | " + " | ".join(cells) + " |")
EOF
