#!/usr/bin/env bash
# Static files over HTTPS, cgihost (rustls) vs nginx (OpenSSL): see
# scripts/bench-static.sh.
exec "$(dirname "$0")/bench-static.sh" --tls "$@"
