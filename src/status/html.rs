//! The status snapshot as an HTML dashboard: summary cards, requests per
//! route, each spawned pool's workers, each FastCGI backend's health; a
//! few lines of script re-fetch the page every 2 s so it stays live.

use std::fmt::Write as _;

use serde_json::Value;

const STYLE: &str = "
:root{--bg:#f6f7f9;--card:#fff;--ink:#1d2430;--mute:#667085;--line:#e4e7ec;--ok:#12805c;--bad:#c4320a;--warn:#b54708;--accent:#3b5bdb}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;background:var(--bg);color:var(--ink)}
header{background:#1d2430;color:#fff;padding:14px 24px;display:flex;gap:16px;align-items:baseline;flex-wrap:wrap}
header h1{font-size:18px;margin:0}header span{color:#c8cfdb;font-size:13px}
main{padding:20px 24px;max-width:1200px}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:12px;margin-bottom:20px}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:12px 14px}
.card b{display:block;font-size:22px;font-variant-numeric:tabular-nums}.card small{color:var(--mute)}
section{background:var(--card);border:1px solid var(--line);border-radius:8px;margin-bottom:20px;overflow-x:auto}
h2{font-size:15px;margin:0;padding:12px 14px;border-bottom:1px solid var(--line)}
table{border-collapse:collapse;width:100%}th,td{padding:7px 14px;text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
th{color:var(--mute);font-weight:600;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
th:first-child,td:first-child{text-align:left}tr+tr td{border-top:1px solid var(--line)}
.ok{color:var(--ok);font-weight:600}.bad{color:var(--bad);font-weight:600}.warn{color:var(--warn);font-weight:600}
.c5{color:var(--bad)}.c4{color:var(--warn)}.empty{color:var(--mute);padding:12px 14px}
footer{color:var(--mute);font-size:12px;padding:0 24px 20px}footer a{color:var(--accent)}
";

/// Re-fetch the page every 2 s and swap `<main>`: live numbers, one
/// renderer. `data-live` tells a test (and a curious reader) it ran.
const SCRIPT: &str = "
(function(){
  async function refresh(){
    try{
      const r=await fetch(location.pathname,{headers:{Accept:'text/html'},cache:'no-store'});
      if(!r.ok)throw new Error(r.status);
      const doc=new DOMParser().parseFromString(await r.text(),'text/html');
      document.querySelector('main').replaceWith(doc.querySelector('main'));
      document.querySelector('header').replaceWith(doc.querySelector('header'));
      document.body.dataset.live='1';
      document.getElementById('live').textContent='live · updated '+new Date().toLocaleTimeString();
    }catch(e){document.getElementById('live').textContent='paused: '+e.message;}
  }
  refresh();setInterval(refresh,2000);
})();
";

/// The whole page for the snapshot `s`.
pub fn html(s: &Value) -> String {
    let mut o = String::with_capacity(8192);
    let uptime = duration(s["uptime_secs"].as_u64().unwrap_or(0));
    header(&mut o, s, &uptime);
    let pools = s["fastcgi_pools"].as_array().cloned().unwrap_or_default();
    let backends = s["fastcgi_backends"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    cards(&mut o, s, &uptime, &pools, &backends);
    routes(&mut o, s);
    pool_sections(&mut o, &pools);
    backend_table(&mut o, &backends);
    certificate_table(&mut o, s);
    footer(&mut o);
    o
}

fn header(o: &mut String, s: &Value, uptime: &str) {
    let _ = write!(
        o,
        "<!doctype html><html lang=en><head><meta charset=utf-8>\
<meta name=viewport content='width=device-width,initial-scale=1'>\
<title>cgihost status</title><style>{STYLE}</style></head><body>\
<header><h1>cgihost status</h1><span>version {}</span><span>pid {}</span>\
<span>up {uptime}</span><span>config generation {}</span></header><main>",
        esc(&s["version"]),
        esc(&s["pid"]),
        esc(&s["config_generation"]),
    );
}

/// The summary cards; a pool or backend that is down turns its card red.
fn cards(o: &mut String, s: &Value, uptime: &str, pools: &[Value], backends: &[Value]) {
    let workers_up: usize = pools
        .iter()
        .flat_map(|p| p["workers"].as_array().cloned().unwrap_or_default())
        .filter(|w| w["state"] == "running" || w["state"] == "starting")
        .count();
    let backends_up = backends.iter().filter(|b| b["up"] == true).count();
    let _ = write!(o, "<div class=cards>");
    for (value, label) in [
        (uptime.to_string(), "uptime".to_string()),
        (esc(&s["requests"]), "requests answered".into()),
        (
            esc(&s["connections"]["open"]),
            format!(
                "connections open ({} total)",
                esc(&s["connections"]["total"])
            ),
        ),
        (
            format!(
                "{} / {}",
                esc(&s["cgi"]["running"]),
                esc(&s["cgi"]["max_processes"])
            ),
            "CGI processes running / max".into(),
        ),
        (
            workers_up.to_string(),
            format!("FastCGI workers up in {} pool(s)", pools.len()),
        ),
        (
            format!("{backends_up} / {}", backends.len()),
            "FastCGI backends up".into(),
        ),
    ] {
        // A backend or pool that is down turns its card red.
        let alarm = (label.starts_with("FastCGI backends") && backends_up < backends.len())
            || (label.starts_with("FastCGI workers") && pools.iter().any(|p| p["healthy"] != true));
        let class = if alarm { " class=bad" } else { "" };
        let _ = write!(
            o,
            "<div class=card><b{class}>{value}</b><small>{label}</small></div>"
        );
    }
    let _ = write!(o, "</div>");
}

fn routes(o: &mut String, s: &Value) {
    let _ = write!(o, "<section id=routes><h2>Requests per route</h2>");
    let routes = s["routes"].as_array().cloned().unwrap_or_default();
    if routes.is_empty() {
        let _ = write!(o, "<p class=empty>No requests yet.</p>");
    } else {
        let _ = write!(
            o,
            "<table><tr><th>route</th><th>requests</th><th>2xx</th><th>3xx</th><th>4xx</th>\
<th>5xx</th><th>avg time</th><th>avg upstream</th><th>sent</th></tr>"
        );
        for r in &routes {
            let st = &r["status"];
            let ms = |v: &Value| v.as_f64().map_or("–".into(), |m| format!("{m:.1} ms"));
            // Only non-zero error counts are coloured.
            let flag = |v: &Value, class: &str| {
                let n = esc(v);
                if v.as_u64().unwrap_or(0) > 0 {
                    format!("<td class={class}>{n}</td>")
                } else {
                    format!("<td>{n}</td>")
                }
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td>{}{}\
<td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&r["route"]),
                esc(&r["requests"]),
                esc(&st["2xx"]),
                esc(&st["3xx"]),
                flag(&st["4xx"], "c4"),
                flag(&st["5xx"], "c5"),
                ms(&r["avg_ms"]),
                ms(&r["upstream_avg_ms"]),
                bytes(r["bytes_out"].as_u64().unwrap_or(0)),
            );
        }
        let _ = write!(o, "</table>");
    }
    let _ = write!(o, "</section>");
}

fn pool_sections(o: &mut String, pools: &[Value]) {
    for p in pools {
        let health = if p["healthy"] == true {
            "<span class=ok>healthy</span>"
        } else {
            "<span class=bad>failing: answering 503</span>"
        };
        let _ = write!(
            o,
            "<section class=pool><h2>Pool {} · generation {} · {health} · {} requests · {} restarts</h2>\
<table><tr><th>pid</th><th>state</th><th>generation</th><th>uptime</th></tr>",
            esc(&p["pool"]),
            esc(&p["generation"]),
            esc(&p["requests"]),
            esc(&p["restarts"]),
        );
        for w in p["workers"].as_array().cloned().unwrap_or_default() {
            let class = match w["state"].as_str() {
                Some("running") => "ok",
                Some("starting" | "stopping") => "warn",
                _ => "bad",
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td class={class}>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&w["pid"]),
                esc(&w["state"]),
                esc(&w["generation"]),
                duration(w["uptime_secs"].as_u64().unwrap_or(0)),
            );
        }
        let _ = write!(o, "</table></section>");
    }
}

fn backend_table(o: &mut String, backends: &[Value]) {
    if !backends.is_empty() {
        let _ = write!(
            o,
            "<section id=backends><h2>FastCGI backends</h2><table><tr><th>address</th><th>health</th>\
<th>in flight</th><th>requests</th><th>connects</th><th>connect failures</th></tr>"
        );
        for b in backends {
            let health = if b["up"] == true {
                "<span class=ok>up</span>".to_string()
            } else {
                format!("<span class=bad>down: {}</span>", esc(&b["last_error"]))
            };
            let _ = write!(
                o,
                "<tr><td>{}</td><td>{health}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&b["addr"]),
                esc(&b["in_flight"]),
                esc(&b["requests"]),
                esc(&b["connects"]),
                esc(&b["connect_failures"]),
            );
        }
        let _ = write!(o, "</table></section>");
    }
}

/// Automatic HTTPS: names, issuer, expiry, the last order's outcome.
fn certificate_table(o: &mut String, s: &Value) {
    let Some(certs) = s["acme"].as_array() else {
        return;
    };
    let _ = write!(
        o,
        "<section id=certificates><h2>Certificates (ACME)</h2><table><tr><th>names</th>\
<th>issuer</th><th>expires in</th><th>last renewal</th></tr>"
    );
    for c in certs {
        let names: Vec<String> = c["names"]
            .as_array()
            .into_iter()
            .flatten()
            .map(esc)
            .collect();
        let expires = match c["expires_in_secs"].as_i64() {
            Some(left) if left > 0 => duration(left as u64),
            Some(_) => "<span class=bad>expired</span>".into(),
            None => "<span class=bad>none yet</span>".into(),
        };
        let last = match c["last_renewal"]["ok"].as_bool() {
            None => "none this run".to_string(),
            Some(true) => "<span class=ok>ok</span>".into(),
            Some(false) => format!(
                "<span class=bad>failed: {}</span>",
                esc(&c["last_renewal"]["error"])
            ),
        };
        let _ = write!(
            o,
            "<tr><td>{}</td><td>{}</td><td>{expires}</td><td>{last}</td></tr>",
            names.join(", "),
            esc(&c["issuer"]),
        );
    }
    let _ = write!(o, "</table></section>");
}

fn footer(o: &mut String) {
    let _ = write!(
        o,
        "</main><footer><span id=live>static snapshot</span> · \
<a href='?json'>JSON</a> · <a href='metrics'>Prometheus metrics</a></footer>\
<script>{SCRIPT}</script></body></html>"
    );
}

pub(super) fn esc(v: &Value) -> String {
    let text = match v {
        Value::String(s) => s.clone(),
        Value::Null => "–".into(),
        other => other.to_string(),
    };
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

pub(super) fn duration(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

pub(super) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}
