# cgihost as a peer of ../shared/bench/peers.sh (copied into its peers.d/ by
# scripts/bench.sh for the run). Flags are the SPEC.md command line.

register_peer cgihost
CGIHOST_PORT=$((BASE_PORT + 61))

peer_cgihost_start() {
    local d=$1 php=()
    # php-fpm only when this run measures a PHP workload.
    if need_php && { want_workload fcgi-php || want_workload upload-php; }; then
        start_phpfpm "$d" || return 1
        php=(--fastcgi "*.php=unix:$PHP_SOCK")
    fi
    # The peers run without access logs (nginx: access_log off; lighttpd and
    # caddy: none configured), so cgihost does too; CGIHOST_ACCESS_LOG=1
    # measures it with its default combined log going to a file.
    printf 'access_log = %s\n' "$([[ ${CGIHOST_ACCESS_LOG:-0} == 1 ]] && echo true || echo false)" >"$d/cgihost.toml"
    launch cgihost "$d/cgihost.log" "${CGIHOST_BIN:-cgihost}" --bind 127.0.0.1 --port "$CGIHOST_PORT" \
        --config "$d/cgihost.toml" --root "$WWW" --cgi-dir "$WWW/cgi-bin" -q "${php[@]}"
    wait_http "http://127.0.0.1:$CGIHOST_PORT/cgi-bin/hello" 10 || { fail "cgihost did not start: $(tail -3 "$d/cgihost.log")"; return 1; }
}

peer_cgihost_targets() {
    local u=http://127.0.0.1:$CGIHOST_PORT
    printf '%s\t%s\t%s\n' \
        static-1k  "cgihost" "$u/static/1k.bin" \
        static-1m  "cgihost" "$u/static/1m.bin" \
        cgi-c      "cgihost" "$u/cgi-bin/hello" \
        cgi-sh     "cgihost" "$u/cgi-bin/hello.sh" \
        fcgi-php   "cgihost + php-fpm" "$u/hello.php" \
        upload-cgi "cgihost" "$u/cgi-bin/upload" \
        upload-php "cgihost + php-fpm" "$u/upload.php"
}

peer_cgihost_version() { "${CGIHOST_BIN:-cgihost}" --version 2>&1 | head -1; }
