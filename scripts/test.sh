#!/usr/bin/env bash
# Install what the tests need (idempotent; Debian packages, as root), then run
# the whole test suite: unit, integration, ignored (slow) tests included.
set -euo pipefail
cd "$(dirname "$0")/.."

# openssl: test certificates and password hashes; chromium (+ a font): the status
# page test; apache2-utils: htpasswd, for password hashes of every kind; git:
# git-http-backend and the client, for the git-over-HTTP deploy test.
need=(python3 perl coreutils curl php-fpm libfcgi-perl php-cgi openssl chromium fonts-dejavu-core apache2-utils git)
missing=()
for pkg in "${need[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "scripts/test.sh: missing packages ${missing[*]}; run as root or install them" >&2
        exit 1
    fi
    echo "installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

cargo build --all-targets
cargo test --all-targets -- --include-ignored
