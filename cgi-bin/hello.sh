#!/bin/sh
# The smallest CGI program: a header block, a blank line, the body.
printf 'Content-Type: text/plain\r\n\r\n'
echo "Hello from sh! You asked for ${REQUEST_URI}"
