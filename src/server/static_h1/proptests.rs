//! Property tests: the static path's head parser agrees with hyper's.
//!
//! A head [`parse_head`] takes (`Complete`) is served here without hyper,
//! so it must be one hyper would have taken too, as the same request:
//! same method, target, version, headers, and the same keep-alive choice.
//! A head hyper refuses must never be served here (it goes to hyper, for
//! hyper's 400). Each generated head — well-formed ones and mutations of
//! them — is parsed here, by `httparse` as hyper calls it, and by a real
//! hyper HTTP/1 connection over an in-memory pipe.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;
use http::{header, HeaderMap, HeaderName, HeaderValue, Response, Uri, Version};

/// hyper's default header count (`DEFAULT_MAX_HEADERS`); cgihost does
/// not change it.
const HYPER_MAX_HEADERS: usize = 100;

fn pick(items: &'static [&'static [u8]]) -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(items).prop_map(<[u8]>::to_vec)
}

/// `common` most of the time, one of `odd` otherwise.
fn mostly(common: &'static [u8], odd: &'static [&'static [u8]]) -> BoxedStrategy<Vec<u8>> {
    prop_oneof![10 => Just(common.to_vec()), 1 => pick(odd)].boxed()
}

fn method() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => pick(&[b"GET", b"HEAD"]),
        1 => pick(&[b"POST", b"get", b"OPTIONS", b"PRI", b"CONNECT", b"GET\x00", b"", b"G(T", b"GE T"]),
    ]
}

fn target() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => pick(&[b"/", b"/a.txt", b"/a?x=1", b"/dir/", b"/a%20b"]),
        2 => "/[a-zA-Z0-9._~%!$&'()*+,;=:@/?#\\[\\]-]{0,12}".prop_map(String::into_bytes),
        1 => pick(&[
            b"*", b"http://a/", b"//x", b"/a b", b"/\xff", b"/a#f", b"/\x7f", b"?", b"", b"/%zz",
            b"/\"", b"/{}", b"/a\\b", b"/^`|",
        ]),
    ]
}

fn version() -> BoxedStrategy<Vec<u8>> {
    prop_oneof![
        3 => pick(&[b"HTTP/1.1", b"HTTP/1.0"]),
        1 => pick(&[b"HTTP/2.0", b"HTTP/1.2", b"http/1.1", b"HTTP/1.", b"HTTP/1.10", b"HTTP/0.9", b""]),
    ]
    .boxed()
}

fn line_end() -> BoxedStrategy<Vec<u8>> {
    mostly(b"\r\n", &[b"\n", b"\r", b"\n\r", b""])
}

fn header() -> impl Strategy<Value = Vec<u8>> {
    let name = prop_oneof![
        3 => pick(&[b"Host", b"host", b"Accept", b"X-A", b"User-Agent"]),
        3 => pick(&[
            b"Content-Length", b"Transfer-Encoding", b"Expect", b"Upgrade", b"Connection",
            b"HOST",
        ]),
        1 => pick(&[b"Bad Name", b"", b"X\x00", b"Host ", b"X\xff", b"(x)", b"X:Y"]),
    ];
    let sep = mostly(b": ", &[b":", b" :", b":\t", b":  ", b""]);
    let value = prop_oneof![
        4 => pick(&[b"a", b"example.org:8080", b"[::1]", b"*/*", b"curl"]),
        3 => pick(&[
            b"0", b"00", b"5", b"-0", b"0, 0", b"close", b"keep-alive", b"Keep-Alive",
            b"keep-alive, close", b"TE, close", b"upgrade", b"chunked", b"gzip", b"100-continue",
            b"h2c", b"",
        ]),
        1 => pick(&[b"a b", b"u@a", b"\x80", b"v ", b"\tv", b"a\rb", b"a\x00", b"a:99999"]),
    ];
    (name, sep, value, line_end()).prop_map(|(n, s, v, e)| [n, s, v, e].concat())
}

/// A well-formed head of a GET or HEAD, as browsers send them.
fn clean_head() -> impl Strategy<Value = Vec<u8>> {
    let header = (
        pick(&[
            b"Accept",
            b"X-A",
            b"User-Agent",
            b"Connection",
            b"Content-Length",
            b"Host",
        ]),
        pick(&[
            b"*/*",
            b"close",
            b"keep-alive",
            b"0",
            b"a",
            b"curl/8",
            b"TE, close",
        ]),
    )
        .prop_map(|(n, v)| [n, b": ".to_vec(), v, b"\r\n".to_vec()].concat());
    (
        pick(&[b"GET", b"HEAD"]),
        prop_oneof![
            pick(&[b"/", b"/a.txt", b"/a?x=1", b"/dir/"]),
            "/[a-zA-Z0-9._~%/?=&-]{0,12}".prop_map(String::into_bytes),
        ],
        pick(&[b"HTTP/1.1", b"HTTP/1.0"]),
        prop::option::weighted(0.9, Just(b"Host: a\r\n".to_vec())),
        prop::collection::vec(header, 0..4),
    )
        .prop_map(|(m, t, v, host, headers)| {
            let mut out = [m, b" ".to_vec(), t, b" ".to_vec(), v, b"\r\n".to_vec()].concat();
            out.extend(host.unwrap_or_default());
            out.extend(headers.concat());
            out.extend(b"\r\n");
            out
        })
}

/// A request head with odd parts, sometimes with blank lines before it.
fn head() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(pick(&[b"\r\n", b"\n"]), 0..2),
        method(),
        mostly(b" ", &[b"  ", b"\t", b""]),
        target(),
        mostly(b" ", &[b"  ", b"\t", b""]),
        version(),
        line_end(),
        prop::option::weighted(0.9, Just(b"Host: a\r\n".to_vec())),
        prop::collection::vec(header(), 0..5),
        line_end(),
    )
        .prop_map(|(blank, m, s1, t, s2, v, e1, host, headers, e2)| {
            let mut out = blank.concat();
            for part in [m, s1, t, s2, v, e1, host.unwrap_or_default()] {
                out.extend(part);
            }
            out.extend(headers.concat());
            out.extend(e2);
            out
        })
}

/// One edit to a head: a byte replaced, dropped or put in.
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Remove(usize),
    Insert(usize, u8),
    Truncate(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    let byte = prop_oneof![
        2 => prop::sample::select(&b" \r\n:\t\x00\x7f\x80/"[..]),
        1 => any::<u8>(),
    ];
    prop_oneof![
        (any::<usize>(), byte.clone()).prop_map(|(i, b)| Edit::Set(i, b)),
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Truncate),
    ]
}

fn apply(mut head: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        if head.is_empty() {
            break;
        }
        match *e {
            Edit::Set(i, b) => {
                let i = i % head.len();
                head[i] = b;
            }
            Edit::Remove(i) => {
                head.remove(i % head.len());
            }
            Edit::Insert(i, b) => head.insert(i % (head.len() + 1), b),
            Edit::Truncate(n) => head.truncate(n % (head.len() + 1)),
        }
    }
    head
}

/// Heads as sent, and mutated.
pub(super) fn input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => clean_head(),
        3 => head(),
        2 => (clean_head(), prop::collection::vec(edit(), 1..3)).prop_map(|(h, e)| apply(h, &e)),
        2 => (head(), prop::collection::vec(edit(), 1..4)).prop_map(|(h, e)| apply(h, &e)),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// What `httparse` makes of `input` when hyper calls it (default parser
/// settings, hyper's header count).
#[derive(Debug, PartialEq)]
enum Httparse {
    Complete {
        len: usize,
        method: String,
        path: String,
        version: u8,
        headers: Vec<(String, Vec<u8>)>,
    },
    Partial,
    Error(httparse::Error),
}

fn httparse_view(input: &[u8]) -> Httparse {
    let mut headers = [httparse::EMPTY_HEADER; HYPER_MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(input) {
        Ok(httparse::Status::Complete(len)) => Httparse::Complete {
            len,
            method: req.method.unwrap().to_string(),
            path: req.path.unwrap().to_string(),
            version: req.version.unwrap(),
            headers: req
                .headers
                .iter()
                .map(|h| (h.name.to_string(), h.value.to_vec()))
                .collect(),
        },
        Ok(httparse::Status::Partial) => Httparse::Partial,
        Err(e) => Httparse::Error(e),
    }
}

/// What a hyper HTTP/1 connection (as cgihost configures it) did with
/// `input`, written by a client that then waits.
#[derive(Debug)]
enum Hyper {
    /// It called the service with this request; `kept`: after the
    /// response it kept the connection open for the next request.
    Served { req: Box<Request<()>>, kept: bool },
    /// It answered an error (`status`) without calling the service.
    Refused { status: String },
    /// It is waiting for more of the head.
    Waiting,
}

fn hyper_view(input: &[u8]) -> Hyper {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        let (mut client, server) = tokio::io::duplex(1 << 16);
        let seen: Arc<Mutex<Option<Request<()>>>> = Arc::default();
        let service = {
            let seen = seen.clone();
            service_fn(move |req: Request<hyper::body::Incoming>| {
                let (parts, _) = req.into_parts();
                *seen.lock().unwrap() = Some(Request::from_parts(parts, ()));
                async move {
                    // An HTTP/1.1 response, as cgihost's are: hyper adds
                    // `Connection: keep-alive` for an HTTP/1.0 client that
                    // asked for it, and keeps the connection.
                    let resp = Response::new(Empty::<Bytes>::new());
                    Ok::<_, Infallible>(resp)
                }
            })
        };
        let conn = http1::Builder::new()
            .keep_alive(true)
            .max_buf_size(64 * 1024)
            .serve_connection(TokioIo::new(server), service);
        client.write_all(input).await.unwrap();
        // Time is paused: this waits exactly as long as hyper has
        // something to do, then one virtual second.
        let ended = tokio::time::timeout(Duration::from_secs(1), conn).await;
        let req = seen.lock().unwrap().take();
        match (req, ended) {
            (Some(req), ended) => Hyper::Served {
                req: Box::new(req),
                kept: ended.is_err(),
            },
            (None, Err(_)) => Hyper::Waiting,
            (None, Ok(result)) => {
                assert!(result.is_err(), "hyper ended without a request or an error");
                drop(result);
                let mut answer = Vec::new();
                let _ =
                    tokio::time::timeout(Duration::from_secs(1), client.read_to_end(&mut answer))
                        .await;
                let status = String::from_utf8_lossy(&answer)
                    .split(' ')
                    .nth(1)
                    .unwrap_or("(nothing)")
                    .to_string();
                Hyper::Refused { status }
            }
        }
    })
}

fn show(input: &[u8]) -> String {
    format!("{:?}", String::from_utf8_lossy(input))
}

fn check(input: &[u8]) -> Result<(), TestCaseError> {
    let ours = parse_head(input);
    let parsed = httparse_view(input);
    match ours {
        Head::Complete(req, len, _) => {
            same_as_httparse(input, &req, len, parsed)?;
            same_as_hyper(input, &req, len)?;
        }
        Head::Partial => {
            prop_assert_eq!(&parsed, &Httparse::Partial, "{}", show(input));
            let theirs = hyper_view(input);
            prop_assert!(
                matches!(theirs, Hyper::Waiting),
                "{}: partial here, hyper: {:?}",
                show(input),
                theirs
            );
        }
        Head::NotOurs | Head::Hot(..) => {
            // Handed to hyper (no memos here). When httparse refuses it, so does hyper:
            // the client gets hyper's error, never a response from here.
            if let Httparse::Error(e) = parsed {
                let theirs = hyper_view(input);
                prop_assert!(
                    matches!(&theirs, Hyper::Refused { status } if status.starts_with('4')),
                    "{}: httparse error {:?}, hyper: {:?}",
                    show(input),
                    e,
                    theirs
                );
            }
        }
    }
    Ok(())
}

/// A head served here is the one httparse (as hyper calls it) reads, as
/// the same request.
fn same_as_httparse(
    input: &[u8],
    req: &Request<()>,
    len: usize,
    parsed: Httparse,
) -> Result<(), TestCaseError> {
    // httparse as hyper calls it takes the same head, as the same
    // request.
    let Httparse::Complete {
        len: their_len,
        method,
        path,
        version,
        headers,
    } = parsed
    else {
        return Err(TestCaseError::fail(format!(
            "{}: served here, but httparse says {parsed:?}",
            show(input)
        )));
    };
    prop_assert_eq!(len, their_len);
    prop_assert_eq!(req.method().as_str(), method);
    // As hyper reads the target (a fragment is dropped alike).
    let target = Uri::try_from(path.as_str()).ok();
    prop_assert_eq!(Some(req.uri()), target.as_ref());
    let want = if version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    prop_assert_eq!(req.version(), want);
    let ours: Vec<(String, Vec<u8>)> = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    let mut theirs: Vec<(String, Vec<u8>)> = headers
        .into_iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v))
        .collect();
    // A HeaderMap groups a name's values; compare as hyper's map.
    let mut grouped = HeaderMap::new();
    for (n, v) in &theirs {
        grouped.append(
            HeaderName::from_bytes(n.as_bytes()).unwrap(),
            HeaderValue::from_bytes(v).unwrap(),
        );
    }
    theirs = grouped
        .iter()
        .map(|(n, v)| (n.as_str().to_string(), v.as_bytes().to_vec()))
        .collect();
    prop_assert_eq!(ours, theirs);
    Ok(())
}

/// hyper itself serves it, as the same request, and keeps the connection
/// exactly when the static path does.
fn same_as_hyper(input: &[u8], req: &Request<()>, len: usize) -> Result<(), TestCaseError> {
    // And hyper itself serves it, as the same request, and keeps
    // the connection exactly when the static path does.
    match hyper_view(&input[..len]) {
        Hyper::Served { req: theirs, kept } => {
            prop_assert_eq!(theirs.method(), req.method());
            prop_assert_eq!(theirs.uri(), req.uri());
            prop_assert_eq!(theirs.version(), req.version());
            // hyper keeps one of repeated equal `Content-Length`s
            // (the static path accepts only `0`, and no handler
            // reads a GET's length): compare the rest exactly.
            let mut ours = req.headers().clone();
            if let Some(length) = ours.get(header::CONTENT_LENGTH).cloned() {
                ours.insert(header::CONTENT_LENGTH, length);
            }
            prop_assert_eq!(theirs.headers(), &ours);
            prop_assert_eq!(
                kept,
                wants_keep_alive(req),
                "{}: keep-alive here {}, in hyper {}",
                show(input),
                wants_keep_alive(req),
                kept
            );
        }
        other => {
            return Err(TestCaseError::fail(format!(
                "{}: served here, but hyper: {other:?}",
                show(input)
            )))
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn static_path_agrees_with_hyper(input in input()) {
        check(&input)?;
    }
}

/// The generator is not vacuous: many heads are served here, many are
/// not, and some are refused by httparse.
#[test]
fn generated_heads_cover_every_outcome() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut ours, mut partial, mut not_ours, mut errors) = (0, 0, 0, 0);
    for _ in 0..2000 {
        let head = input().new_tree(&mut runner).unwrap().current();
        match parse_head(&head) {
            Head::Complete(..) | Head::Hot(..) => ours += 1,
            Head::Partial => partial += 1,
            Head::NotOurs => not_ours += 1,
        }
        errors += usize::from(matches!(httparse_view(&head), Httparse::Error(_)));
    }
    assert!(
        ours > 200 && partial > 50 && not_ours > 200 && errors > 100,
        "served {ours}, partial {partial}, not ours {not_ours} (httparse errors {errors})"
    );
}

/// Cases the generator found or that matter on their own.
#[test]
fn known_heads_agree() {
    for raw in [
        &b"GET / HTTP/1.1\r\nHost: a\r\n\r\n"[..],
        b"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
        b"GET / HTTP/1.0\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\nHost: a\n\n",
        b"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nX: \x80\r\n\r\n",
        b"GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"GET / HTTP/1.1\rHost: a\r\n\r\n",
    ] {
        check(raw).unwrap_or_else(|e| panic!("{}: {e}", show(raw)));
    }
}
