#!/usr/bin/env bash
# Install what the tests need (idempotent; Debian packages, as root), then run
# the whole test suite: unit, integration, ignored (slow) tests included; then
# the soak and chaos check of the built binary (scripts/soak.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

# openssl: test certificates and password hashes; chromium (+ a font): the status
# page test; apache2-utils: htpasswd, for password hashes of every kind; git:
# git-http-backend and the client, for the git-over-HTTP deploy test;
# wordpress (its default theme is only a Recommends), php-mysql and
# mariadb-server: the WordPress deploy test, which starts its own mariadbd.
# zsh, fish: each parses its completion script (tests/completions.rs);
# groff-base, man-db: render the man page. systemd: systemd-analyze verify
# on the packaged units, and dpkg-dev: dpkg-shlibdeps, which cargo-deb runs
# for the package's Depends (tests/package.rs).
need=(python3 perl coreutils curl php-fpm libfcgi-perl php-cgi openssl chromium fonts-dejavu-core apache2-utils git
      wordpress wordpress-theme-twentytwentythree php-mysql mariadb-server
      # pebble: the ACME test CA tests/acme.rs issues certificates from.
      pebble
      zsh fish groff-base man-db systemd dpkg-dev)
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
    # No package may start its service (mariadb-server's mariadbd; apache2,
    # which wordpress pulls in): the tests start servers of their own. Images
    # like this one ship a policy-rc.d that refuses; elsewhere one is put in
    # place for the install only.
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        trap 'rm -f /usr/sbin/policy-rc.d' EXIT
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# cargo-deb: tests/package.rs builds the Debian package with it
# (scripts/package.sh).
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked

# Style and lints first: a formatting slip or a clippy warning fails the run.
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo build --all-targets
cargo test --all-targets -- --include-ignored
# The standing soak and chaos check against the real binary (about 2 minutes).
scripts/soak.sh
