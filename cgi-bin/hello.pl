#!/usr/bin/env perl
# Hello from Perl, with a custom status and an extra header.
use strict;
use warnings;
print "Status: 200 OK\r\n";
print "Content-Type: text/plain\r\n";
print "X-Handler: perl\r\n\r\n";
print "Hello from Perl! Method: $ENV{REQUEST_METHOD}\n";
