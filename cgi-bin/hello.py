#!/usr/bin/env python3
"""Hello from Python: headers, a blank line, then the body."""
import html
import os

name = os.environ.get("QUERY_STRING", "") or "world"
print("Content-Type: text/html; charset=utf-8")
print()
print(f"<!DOCTYPE html><title>hello</title><p>Hello, {html.escape(name)}, from Python!</p>")
