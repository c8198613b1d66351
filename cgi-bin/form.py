#!/usr/bin/env python3
"""A form: GET shows it (and echoes ?query fields), POST (urlencoded) echoes the fields."""
import html
import os
import sys
from urllib.parse import parse_qsl

method = os.environ.get("REQUEST_METHOD", "GET")
fields = parse_qsl(os.environ.get("QUERY_STRING", ""), keep_blank_values=True)
if method == "POST":
    length = int(os.environ.get("CONTENT_LENGTH") or 0)
    body = sys.stdin.buffer.read(length).decode("utf-8", "replace")
    if os.environ.get("CONTENT_TYPE", "").startswith("application/x-www-form-urlencoded"):
        fields += parse_qsl(body, keep_blank_values=True)

rows = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in fields)
sys.stdout.write("Content-Type: text/html; charset=utf-8\r\n\r\n")
sys.stdout.write(f"""<!DOCTYPE html><title>form</title>
<form method="post" action="{html.escape(os.environ.get('SCRIPT_NAME', ''))}">
<input name="name" placeholder="name"> <input name="colour" placeholder="colour">
<button>send</button></form>
<p>{html.escape(method)} with {len(fields)} field(s):</p><table>{rows}</table>
""")
