#!/usr/bin/env python3
"""Dump the CGI environment as `NAME=value` lines, sorted (handy for debugging)."""
import os
import sys

out = ["Content-Type: text/plain; charset=utf-8", ""]
out += [f"{k}={v}" for k, v in sorted(os.environ.items())]
sys.stdout.write("\n".join(out) + "\n")
