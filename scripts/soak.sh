#!/usr/bin/env bash
# Soak and chaos test of the real binary (issue 15, "Standing checks"):
# mixed load (static, CGI, chunked and multipart uploads, php-fpm, a spawned
# pool, client aborts) with every answer checked, fds/RSS/children checked
# after it, then php-fpm and pool workers killed and SIGHUP every second
# under load. The work is in scripts/soak.py (its docstring says more).
#
#   scripts/soak.sh                 # about 2 minutes
#   SOAK_SECS=30 scripts/soak.sh    # seconds under load (default 100)
#
# Needs python3, perl with FCGI (libfcgi-perl) and php-fpm: scripts/test.sh
# installs them. Exits non-zero on any failure; the last line is a summary.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z ${SOAK_BIN:-} ]]; then
    cargo build --quiet --bin cgihost
    export SOAK_BIN=${CARGO_TARGET_DIR:-$PWD/target}/debug/cgihost
fi
secs=${SOAK_SECS:-100}
# A hard bound, whatever happens: python cleans up on SIGTERM.
exec timeout -k 15 "$((${secs%.*} * 2 + 180))" python3 scripts/soak.py
