#!/bin/bash
# Receives uploads offloaded by cgihost (--upload-dir /cgi-bin/upload.sh=DIR):
# no multipart parsing here — each file field F arrives as F.name, F.path,
# F.size, F.content_type and F.sha256; other fields as they were sent.
decode() { local v="${1//+/ }"; printf '%b' "${v//%/\\x}"; }
printf 'Content-Type: text/plain\r\n\r\n'
head -c "${CONTENT_LENGTH:-0}" | tr '&' '\n' | while IFS='=' read -r key value || [ -n "$key" ]; do
    echo "$(decode "$key") = $(decode "$value")"
    # To keep a file, move it away (what is left is removed after the response):
    # [[ $key == *.path ]] && mv "$(decode "$value")" /srv/uploads/
done
