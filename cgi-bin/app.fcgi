#!/usr/bin/perl
# A long-lived FastCGI handler in Perl (the FCGI module: Debian libfcgi-perl).
#
#   cgihost --spawn '/app=perl cgi-bin/app.fcgi' --workers 4
#
# cgihost hands each worker the listening socket as fd 0; FCGI::Request()
# accepts on fd 0 by default. The process serves request after request, so
# state persists between them: $served counts this process's requests.
# Started as a plain CGI program (/cgi-bin/app.fcgi), Accept() returns once
# with the CGI environment, so the same file works both ways.
use strict;
use warnings;
use FCGI;

my $greeting = "hello";
my $served   = 0;
my %env;
my $request = FCGI::Request(\*STDIN, \*STDOUT, \*STDERR, \%env);

while ($request->Accept() >= 0) {
    $served++;
    my %env = $request->IsFastCGI ? %env : %ENV;
    my $length = $env{CONTENT_LENGTH} || 0;
    my ($body, $got) = ('', 0);
    while ($got < $length) {    # read (and count) the whole body
        my $n = read(STDIN, my $chunk, 65536) or last;
        $got += $n;
    }
    my $text = sprintf "%s from app.fcgi (Perl), pid %d, request %d in this process\n"
      . "%s %s PATH_INFO='%s' body=%d bytes\n",
      $greeting, $$, $served, $env{REQUEST_METHOD} // '?', $env{REQUEST_URI} // '?',
      $env{PATH_INFO} // '', $got;
    print "Content-Type: text/plain; charset=utf-8\r\n",
      "Content-Length: ", length($text), "\r\n\r\n", $text;
}
