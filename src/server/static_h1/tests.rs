//! Unit tests of the static path's head handling: which heads it takes,
//! empty lines between requests, keep-alive by version.

use super::head::parse_head;
use super::*;

fn parsed(raw: &str) -> Option<Request<()>> {
    match parse_head(raw.as_bytes()) {
        Head::Complete(req, len, _) => {
            assert_eq!(len, raw.find("\r\n\r\n").unwrap() + 4);
            Some(req)
        }
        _ => None,
    }
}

#[test]
fn takes_only_bodiless_get_and_head() {
    let ours = [
        "GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        "HEAD /a.txt HTTP/1.0\r\n\r\n",
        "GET /a?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
        "POST /up HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-Continue\r\n\r\n",
    ];
    for raw in ours {
        assert!(parsed(raw).is_some(), "{raw:?}");
    }
    let theirs = [
        "POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        "GET / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
        "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 200-ok\r\n\r\n",
        "POST / HTTP/1.0\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
        "GET / HTTP/1.1\r\nUpgrade: h2c\r\nConnection: upgrade\r\n\r\n",
        "GET http://a/ HTTP/1.1\r\n\r\n",
        "OPTIONS * HTTP/1.1\r\n\r\n",
        "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        "GET / HTTP/1.1\r\nBad Header: x\r\n\r\n",
        "GET / HTTP/1.1\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        "GET / HTTP/1.0\r\nHost: a\r\nhost: a\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: u@a\r\n\r\n",
    ];
    for raw in theirs {
        assert!(parsed(raw).is_none(), "{raw:?}");
    }
    assert!(matches!(
        parse_head(b"GET / HTTP/1.1\r\nHost"),
        Head::Partial
    ));
    let many: String = (0..MAX_HEADERS + 1)
        .map(|i| format!("X-{i}: v\r\n"))
        .collect();
    assert!(parsed(&format!("GET / HTTP/1.1\r\nHost: a\r\n{many}\r\n")).is_none());
}

#[test]
fn only_crlf_and_lf_are_empty_lines() {
    for (input, n) in [
        (&b"\r\n\nGET"[..], 3),
        (b"\n\r\n\r\n", 5),
        (b"\rGET", 0),
        (b"\r\n\rGET", 2),
        (b"\r\r\n", 0),
        (b"\r\n\r", 2),
        (b" \r\n", 0),
        (b"", 0),
    ] {
        assert_eq!(blank_lines(input), n, "{input:?}");
    }
}

#[test]
fn keep_alive_follows_the_version_and_connection_header() {
    let table = [
        ("GET / HTTP/1.1\r\nHost: a\r\n\r\n", true),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
            false,
        ),
        (
            "GET / HTTP/1.1\r\nHost: a\r\nConnection: TE, Close\r\n\r\n",
            false,
        ),
        ("GET / HTTP/1.0\r\n\r\n", false),
        ("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", true),
    ];
    for (raw, want) in table {
        assert_eq!(wants_keep_alive(&parsed(raw).unwrap()), want, "{raw:?}");
    }
}
