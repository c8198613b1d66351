//! The Prometheus metrics at `--status-path PATH/metrics`, scraped from
//! the built binary after known traffic and read with a strict parser of
//! the text format (0.0.4): every sample belongs to a declared family,
//! histograms are cumulative and end in `+Inf` = `_count`; then the
//! counts must be exactly the traffic sent.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use common::*;

/// One series: name and labels.
type Series = (String, BTreeMap<String, String>);

/// A scrape, parsed.
#[derive(Debug, Default)]
struct Scrape {
    /// Family name → type.
    types: HashMap<String, String>,
    samples: HashMap<Series, f64>,
}

impl Scrape {
    /// The value of `name{labels}`, if present.
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let labels = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples.get(&(name.to_string(), labels)).copied()
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
    }
}

/// Parse Prometheus text format 0.0.4 strictly; any deviation is an error.
fn parse(text: &str) -> Result<Scrape, String> {
    let mut s = Scrape::default();
    let mut helped = Vec::<String>::new();
    for (n, line) in text.lines().enumerate() {
        let fail = |why: &str| Err(format!("line {}: {why}: {line:?}", n + 1));
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !valid_name(name) || helped.iter().any(|h| h == name) {
                return fail("bad or repeated HELP");
            }
            helped.push(name.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or_default();
            let known = ["counter", "gauge", "histogram", "summary", "untyped"];
            if !valid_name(name) || !known.contains(&kind) || s.types.contains_key(name) {
                return fail("bad or repeated TYPE");
            }
            if s.samples
                .keys()
                .any(|(n, _)| family_of(n, &s.types) == Some(name))
            {
                return fail("TYPE after its samples");
            }
            s.types.insert(name.to_string(), kind.to_string());
        } else if line.is_empty() || line.starts_with('#') {
            return fail("blank line or unknown comment");
        } else {
            let (series, value) = match sample(line) {
                Ok(v) => v,
                Err(e) => return fail(&e),
            };
            if family_of(&series.0, &s.types).is_none() {
                return fail("sample of no declared family");
            }
            if s.samples.insert(series, value).is_some() {
                return fail("duplicate series");
            }
        }
    }
    check_histograms(&s)?;
    Ok(s)
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// The declared family a sample name belongs to (a counter's samples carry
/// its name; a histogram's add `_bucket`, `_sum` or `_count`).
fn family_of<'a>(sample: &str, types: &'a HashMap<String, String>) -> Option<&'a str> {
    if let Some((name, kind)) = types.get_key_value(sample) {
        if kind != "histogram" {
            return Some(name);
        }
    }
    ["_bucket", "_sum", "_count"].iter().find_map(|suffix| {
        let (name, kind) = types.get_key_value(sample.strip_suffix(suffix)?)?;
        (kind == "histogram").then_some(name.as_str())
    })
}

/// `name{k="v",…} value`.
fn sample(line: &str) -> Result<(Series, f64), String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if !valid_name(name) {
        return Err("bad metric name".into());
    }
    let bytes = line.as_bytes();
    let mut labels = BTreeMap::new();
    let mut i = name_end;
    if bytes[i] == b'{' {
        i += 1;
        while bytes.get(i) != Some(&b'}') {
            let eq = line[i..].find("=\"").ok_or("label without =\"")? + i;
            let key = &line[i..eq];
            let (value, end) = label_value(line, eq + 2)?;
            if !valid_name(key) || labels.insert(key.to_string(), value).is_some() {
                return Err("bad or repeated label name".into());
            }
            i = end;
            match bytes.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {}
                _ => return Err("labels not separated by ','".into()),
            }
        }
        i += 1;
    }
    let value = line[i..]
        .strip_prefix(' ')
        .ok_or("no space before the value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    Ok(((name.to_string(), labels), value))
}

/// The escaped label value starting at `start` (after its quote), and
/// the index after its closing quote.
fn label_value(line: &str, start: usize) -> Result<(String, usize), String> {
    let mut value = String::new();
    let mut chars = line[start..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((value, start + i + 1)),
            '\\' => value.push(match chars.next() {
                Some((_, '\\')) => '\\',
                Some((_, '"')) => '"',
                Some((_, 'n')) => '\n',
                _ => return Err("bad escape".into()),
            }),
            '\n' => return Err("newline in a label value".into()),
            c => value.push(c),
        }
    }
    Err("unterminated label value".into())
}

/// Each histogram series: `le` buckets cumulative, `+Inf` present and
/// equal to `_count`, `_sum` present.
fn check_histograms(s: &Scrape) -> Result<(), String> {
    for (family, _) in s.types.iter().filter(|(_, k)| *k == "histogram") {
        let bucket = format!("{family}_bucket");
        let mut series: BTreeMap<BTreeMap<String, String>, Vec<(f64, f64)>> = BTreeMap::new();
        for ((name, labels), v) in &s.samples {
            if *name != bucket {
                continue;
            }
            let mut rest = labels.clone();
            let le = rest.remove("le").ok_or("bucket without le")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().map_err(|_| format!("bad le {le}"))?
            };
            series.entry(rest).or_default().push((le, *v));
        }
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            if buckets.windows(2).any(|w| w[1].1 < w[0].1) {
                return Err(format!("{family}{labels:?}: buckets not cumulative"));
            }
            let count = s.samples.get(&(format!("{family}_count"), labels.clone()));
            let sum = s.samples.get(&(format!("{family}_sum"), labels.clone()));
            let inf = buckets.last().filter(|b| b.0 == f64::INFINITY).map(|b| b.1);
            if inf.is_none() || inf != count.copied() || sum.is_none() {
                return Err(format!("{family}{labels:?}: +Inf, _count or _sum wrong"));
            }
        }
    }
    Ok(())
}

#[test]
fn the_parser_refuses_what_prometheus_would() {
    let good = "# HELP h_seconds x\n# TYPE h_seconds histogram\n\
        h_seconds_bucket{k=\"a\\\"b\",le=\"1\"} 1\nh_seconds_bucket{k=\"a\\\"b\",le=\"+Inf\"} 2\n\
        h_seconds_sum{k=\"a\\\"b\"} 3.5\nh_seconds_count{k=\"a\\\"b\"} 2\n";
    let s = parse(good).expect("a valid histogram parses");
    assert_eq!(s.value("h_seconds_count", &[("k", "a\"b")]), 2.0);
    for bad in [
        good.replace("_count{k=\"a\\\"b\"} 2", "_count{k=\"a\\\"b\"} 3"),
        good.replace("le=\"+Inf\"} 2", "le=\"+Inf\"} 0"),
        good.replace("# TYPE h_seconds histogram\n", ""),
        format!("{good}h_seconds_sum{{k=\"a\\\"b\"}} 1\n"),
        format!("{good}\n"),
        good.replace("k=\"a", "k=a"),
        good.replace("} 3.5", "} x"),
    ] {
        assert!(parse(&bad).is_err(), "accepted:\n{bad}");
    }
}

/// The scrape of `srv`'s metrics, parsed (a parse error fails the test).
async fn scrape(addr: std::net::SocketAddr) -> Scrape {
    let resp = get(addr, "/status/metrics").await;
    assert_eq!(resp.status, 200);
    assert_eq!(
        resp.header("content-type"),
        Some("text/plain; version=0.0.4; charset=utf-8")
    );
    let text = resp.text();
    parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// Scrape until `cond` holds (10 s at most); the last scrape.
async fn scrape_until(addr: std::net::SocketAddr, cond: impl Fn(&Scrape) -> bool) -> Scrape {
    for _ in 0..100 {
        let m = scrape(addr).await;
        if cond(&m) {
            return m;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("metrics never reached the expected state")
}

const SCRIPTS: &[(&str, &str)] = &[
    (
        "hello.sh",
        "#!/bin/sh\nprintf 'Content-Type: text/plain\\r\\n\\r\\nhi\\n'\n",
    ),
    (
        "drain.sh",
        "#!/bin/sh\ncat >/dev/null\nprintf 'Content-Type: text/plain\\r\\n\\r\\nok\\n'\n",
    ),
    (
        "slow.sh",
        "#!/bin/sh\nsleep 2\nprintf 'Content-Type: text/plain\\r\\n\\r\\nslow\\n'\n",
    ),
    ("broken.sh", "#!/nonexistent/interpreter\n"),
];

/// A FastCGI worker that takes 2 s per request (Perl's FCGI module).
const SLOW_FCGI: &str = "use FCGI; my $r = FCGI::Request();\n\
    while ($r->Accept() >= 0) { sleep 2; print \"Content-Type: text/plain\\r\\n\\r\\nslow\\n\" }\n";

/// The binary with the scripts above as its CGI directory, a pool of one
/// worker (`app`) at /app, the status page, and `config` (TOML) as its file.
fn start(cgi: &tempfile::TempDir, config: &tempfile::NamedTempFile, app: &Path) -> PoolServer {
    let spawn = format!("/app=perl {}", app.display());
    let mut cmd = BinServer::command_with(&fixtures().join("static"), cgi.path(), &[]);
    cmd.arg("--config").arg(config.path());
    cmd.args([
        "--status-path",
        "/status",
        "--spawn",
        &spawn,
        "--workers",
        "1",
    ]);
    PoolServer::start_cmd(cmd)
}

fn config(text: &str) -> tempfile::NamedTempFile {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), text).unwrap();
    file
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cgi_queue_waits_and_503s_are_counted() {
    let cgi = script_dir(SCRIPTS);
    // One CGI slot, one second of queueing: a second program must wait.
    let conf = config("[cgi]\nmax_processes = 1\nqueue_timeout = 1\n");
    let slow_app = cgi.path().join("slow.fcgi");
    std::fs::write(&slow_app, SLOW_FCGI).unwrap();
    let srv = start(&cgi, &conf, &slow_app);
    let addr = srv.addr;
    // The slow program holds the only slot; hello.sh queues, then gets 503.
    let slow = tokio::spawn(get(addr, "/cgi-bin/slow.sh"));
    scrape_until(addr, |m| {
        m.get("cgihost_cgi_spawns_total", &[]) == Some(1.0)
    })
    .await;
    assert_eq!(get(addr, "/cgi-bin/hello.sh").await.status, 503);
    assert_eq!(slow.await.unwrap().status, 200);
    // The pool's one worker busy for 2 s: the next request gets no
    // connection within queue_timeout.
    let slow = tokio::spawn(get(addr, "/app/x"));
    let checked_out = |m: &Scrape| m.get("cgihost_fastcgi_connects_total", &[]) == Some(1.0);
    scrape_until(addr, checked_out).await;
    assert_eq!(get(addr, "/app/x").await.status, 503);
    assert_eq!(slow.await.unwrap().status, 200);
    let m = scrape(addr).await;
    assert_eq!(m.value("cgihost_fastcgi_queue_rejections_total", &[]), 1.0);
    assert_eq!(m.value("cgihost_cgi_queue_waits_total", &[]), 1.0);
    assert_eq!(m.value("cgihost_cgi_queue_rejections_total", &[]), 1.0);
    assert_eq!(m.value("cgihost_cgi_spawns_total", &[]), 1.0);
    let labels = [("route", "cgi"), ("code", "5xx")];
    assert_eq!(m.value("cgihost_requests_total", &labels), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_known_traffic_exactly() {
    let cgi = script_dir(SCRIPTS);
    let conf = config("");
    let app = Path::new(env!("CARGO_MANIFEST_DIR")).join("cgi-bin/app.fcgi");
    let srv = start(&cgi, &conf, &app);
    let addr = srv.addr;

    for _ in 0..3 {
        assert_eq!(get(addr, "/index.html").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(get(addr, "/cgi-bin/hello.sh").await.status, 200);
    }
    assert_eq!(get(addr, "/cgi-bin/broken.sh").await.status, 502);
    let body = vec![b'x'; 1000];
    let posted = request(addr, "POST", "/cgi-bin/drain.sh", "", &body).await;
    assert_eq!(posted.status, 200);
    for _ in 0..3 {
        assert_eq!(get(addr, "/app/x").await.status, 200);
    }
    // Two idle keep-alive connections stay open during the scrape.
    let _held = [Conn::open(addr).await, Conn::open(addr).await];

    // Requests are counted when their body is done: poll until all are.
    // Open connections: the two held and the scrape's own.
    let m = scrape_until(addr, |m| {
        let spawn = [("kind", "spawn")];
        let spawned = m.get("cgihost_request_duration_seconds_count", &spawn);
        spawned == Some(3.0) && m.get("cgihost_connections_open", &[]) == Some(3.0)
    })
    .await;
    let count = |kind| m.value("cgihost_request_duration_seconds_count", &[("kind", kind)]);
    let upstream = |kind| m.value("cgihost_upstream_duration_seconds_count", &[("kind", kind)]);
    assert_eq!(count("static"), 3.0);
    // hello ×2, broken, drain.
    assert_eq!(count("cgi"), 4.0);
    // Only the programs that answered have an upstream time.
    assert_eq!(upstream("cgi"), 3.0);
    assert_eq!(upstream("spawn"), 3.0);
    assert_eq!(m.value("cgihost_cgi_spawns_total", &[]), 3.0);
    assert_eq!(m.value("cgihost_cgi_spawn_failures_total", &[]), 1.0);
    assert_eq!(m.value("cgihost_cgi_queue_waits_total", &[]), 0.0);
    assert_eq!(m.value("cgihost_cgi_queue_rejections_total", &[]), 0.0);
    assert_eq!(m.value("cgihost_fastcgi_queue_rejections_total", &[]), 0.0);
    let connects = m.value("cgihost_fastcgi_connects_total", &[]);
    let reuses = m.value("cgihost_fastcgi_connection_reuses_total", &[]);
    // One worker, requests one after another: one connection, kept.
    assert_eq!((connects, reuses), (1.0, 2.0));
    assert_eq!(m.value("cgihost_bytes_received_total", &[]), 1000.0);
    let by_route: f64 = m
        .samples
        .iter()
        .filter(|((name, _), _)| name == "cgihost_response_bytes_total")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(m.value("cgihost_bytes_sent_total", &[]), by_route);
    let index_len = std::fs::metadata(fixtures().join("static/index.html"))
        .unwrap()
        .len() as f64;
    let static_bytes = m.value("cgihost_response_bytes_total", &[("route", "static")]);
    assert_eq!(static_bytes, 3.0 * index_len);
    let labels = [("route", "cgi"), ("code", "5xx")];
    assert_eq!(m.value("cgihost_requests_total", &labels), 1.0);
    // The one worker is up (it counts as starting for its first seconds).
    let workers = |state| {
        let labels = [("pool", "spawn /app/*"), ("state", state)];
        m.value("cgihost_fastcgi_pool_workers", &labels)
    };
    assert_eq!(workers("starting") + workers("running"), 1.0);
    assert_eq!(m.types["cgihost_request_duration_seconds"], "histogram");
    assert_eq!(m.types["cgihost_cgi_spawns_total"], "counter");
}
