#!/usr/bin/env python3
"""Stream the request body from stdin (any size, constant memory) and report
its byte count and sha256. Try: curl -T big.iso http://127.0.0.1:8992/cgi-bin/upload.py"""
import hashlib
import os
import sys

want = int(os.environ.get("CONTENT_LENGTH") or 0)
digest = hashlib.sha256()
got = 0
stdin = sys.stdin.buffer
while got < want:
    chunk = stdin.read(min(1 << 20, want - got))
    if not chunk:
        break
    digest.update(chunk)
    got += len(chunk)
sys.stdout.write("Content-Type: text/plain\r\n\r\n")
sys.stdout.write(f"bytes={got}\nsha256={digest.hexdigest()}\n")
