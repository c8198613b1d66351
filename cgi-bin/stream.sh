#!/bin/sh
# Server-sent events: one event a second, sent as it is produced (no buffering
# in cgihost). ?5 sets the number of events (default 5, at most 60).
n=${QUERY_STRING:-5}
case $n in ''|*[!0-9]*) n=5 ;; esac
[ "$n" -gt 60 ] && n=60
printf 'Content-Type: text/event-stream\r\nCache-Control: no-cache\r\n\r\n'
i=1
while [ "$i" -le "$n" ]; do
    printf 'id: %d\ndata: tick %d at %s\n\n' "$i" "$i" "$(date +%T)"
    i=$((i + 1))
    [ "$i" -le "$n" ] && sleep 1
done
