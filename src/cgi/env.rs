//! The CGI meta-variables (RFC 3875 §4.1) plus the extras of SPEC.md, built
//! in one function for both CGI environments and FastCGI params.
//!
//! Safety rules that live here and nowhere else:
//! - request headers become `HTTP_*` only when their name is made of ASCII
//!   letters, digits and `-` (so `X_Forwarded_For` cannot forge
//!   `HTTP_X_FORWARDED_FOR`, and no two headers map to one variable);
//! - `Proxy` never becomes `HTTP_PROXY` (httpoxy, CVE-2016-5385);
//! - `Content-Type` / `Content-Length` appear only as `CONTENT_TYPE` /
//!   `CONTENT_LENGTH`, so no header can overwrite a meta-variable;
//! - nothing from the server's own environment but `PATH`.

use std::net::SocketAddr;
use std::path::Path;

use crate::conn::Client;

use http::{header, HeaderMap, Method, Uri, Version};

use crate::meta::{ClientUri, ErrorRedirect, ExtraVars, RemoteUser};
use crate::uri_path::{without_port, without_userinfo};

/// One variable: name and raw value bytes (header values need not be UTF-8).
pub type EnvVar = (String, Vec<u8>);

/// What the request tells us.
pub struct RequestFacts<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub version: Version,
    pub headers: &'a HeaderMap,
    /// The client (behind a proxy: the one it names), not always the peer.
    pub client: Client,
    pub local: SocketAddr,
    /// The client's scheme is https.
    pub https: bool,
    /// Exact body length, when there is a body.
    pub content_length: Option<u64>,
    /// What routing decided (`meta`): the client's URI before rewrites,
    /// the authenticated user, the error page being served, extra vars.
    pub client_uri: Option<&'a Uri>,
    pub user: Option<&'a str>,
    pub error: Option<&'a crate::meta::ErrorRedirect>,
    pub extra: &'a [(String, String)],
}

impl<'a> RequestFacts<'a> {
    /// The facts of a request on a connection, with its body's exact length.
    pub fn new(
        parts: &'a http::request::Parts,
        conn: &crate::conn::ConnInfo,
        content_length: Option<u64>,
    ) -> Self {
        RequestFacts {
            method: &parts.method,
            uri: &parts.uri,
            version: parts.version,
            headers: &parts.headers,
            client: conn.client,
            local: conn.local,
            https: conn.https,
            content_length,
            client_uri: parts.extensions.get::<ClientUri>().map(|c| &c.0),
            user: parts.extensions.get::<RemoteUser>().map(|u| u.0.as_str()),
            error: parts.extensions.get::<ErrorRedirect>(),
            extra: parts
                .extensions
                .get::<ExtraVars>()
                .map_or(&[], |e| &e.0[..]),
        }
    }
}

/// Which script runs, and the split of the URL around it.
pub struct ScriptFacts<'a> {
    /// Decoded URL path of the script, e.g. `/cgi-bin/tool.py`.
    pub script_name: &'a str,
    /// Decoded rest of the path after the script (may be empty).
    pub path_info: &'a str,
    pub script_filename: &'a Path,
    pub document_root: &'a Path,
}

/// Server-wide facts, fixed at start-up.
#[derive(Debug, Clone)]
pub struct ServerFacts {
    pub software: String,
    pub path: String,
    pub pass_authorization: bool,
}

impl ServerFacts {
    pub fn new(pass_authorization: bool) -> ServerFacts {
        ServerFacts {
            software: format!("cgihost/{}", env!("CARGO_PKG_VERSION")),
            path: std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into()),
            pass_authorization,
        }
    }
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The authority of the client's target, when it has one: absolute-form
/// (`GET http://a.example/ HTTP/1.1`) or HTTP/2's `:authority`. It decides
/// the host over any `Host` header (RFC 9112 §3.2.2). Without userinfo.
fn target_authority<'a>(req: &RequestFacts<'a>) -> Option<&'a str> {
    let authority = req
        .client_uri
        .and_then(|u| u.authority())
        .or_else(|| req.uri.authority())?;
    Some(without_userinfo(authority.as_str())).filter(|h| !h.is_empty())
}

/// The target's host, else `Host`, without the port (`[::1]` kept
/// bracketed); else the local address.
fn server_name(req: &RequestFacts) -> String {
    let host = target_authority(req)
        .or_else(|| req.headers.get(header::HOST).and_then(|h| h.to_str().ok()))
        .filter(|h| !h.is_empty());
    match host {
        Some(h) => without_port(h).to_string(),
        None => req.local.ip().to_canonical().to_string(),
    }
}

/// Build every variable for one request.
pub fn build(req: &RequestFacts, script: &ScriptFacts, server: &ServerFacts) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = Vec::with_capacity(32 + req.headers.len());
    build_into(req, script, server, &mut |k, v| {
        env.push((k.to_string(), v.to_vec()))
    });
    env
}

/// Hand every variable to `put` (name, value) without collecting them:
/// FastCGI encodes them straight into its PARAMS records.
pub fn build_into(
    req: &RequestFacts,
    script: &ScriptFacts,
    server: &ServerFacts,
    put: &mut dyn FnMut(&str, &[u8]),
) {
    let mut out = Put {
        put,
        scratch: String::with_capacity(64),
    };
    server_vars(&mut out, req, server);
    script_vars(&mut out, req, script);
    client_vars(&mut out, req);
    routing_vars(&mut out, req);
    out.bytes("PATH", server.path.as_bytes());
    // HTTP/2 carries the host in `:authority`, not in a Host header, and
    // an absolute-form target's authority overrides Host: either way,
    // HTTP_HOST is the target's authority.
    let authority = target_authority(req);
    add_http_headers(
        out.put,
        req.headers,
        server.pass_authorization,
        authority.is_some(),
    );
    if let Some(authority) = authority {
        out.bytes("HTTP_HOST", authority.as_bytes());
    }
    // Last, so a configured value wins (as nginx's fastcgi_param).
    for (k, v) in req.extra {
        out.bytes(k, v.as_bytes());
    }
}

/// Where the variables go, with a reused buffer for numbers.
struct Put<'a> {
    put: &'a mut dyn FnMut(&str, &[u8]),
    scratch: String,
}

impl Put<'_> {
    fn bytes(&mut self, name: &str, value: &[u8]) {
        (self.put)(name, value);
    }

    fn display(&mut self, name: &str, value: &dyn std::fmt::Display) {
        use std::fmt::Write;
        self.scratch.clear();
        let _ = write!(self.scratch, "{value}");
        (self.put)(name, self.scratch.as_bytes());
    }
}

/// The server and the protocol.
fn server_vars(out: &mut Put, req: &RequestFacts, server: &ServerFacts) {
    out.bytes("GATEWAY_INTERFACE", b"CGI/1.1");
    out.bytes("SERVER_SOFTWARE", server.software.as_bytes());
    out.bytes("SERVER_NAME", server_name(req).as_bytes());
    out.display("SERVER_PORT", &req.local.port());
    out.display("SERVER_ADDR", &req.local.ip().to_canonical());
    out.bytes("SERVER_PROTOCOL", protocol(req.version).as_bytes());
    out.bytes("REQUEST_METHOD", req.method.as_str().as_bytes());
    out.bytes("REQUEST_SCHEME", if req.https { b"https" } else { b"http" });
}

/// The script and the URL split around it.
fn script_vars(out: &mut Put, req: &RequestFacts, script: &ScriptFacts) {
    let root = script.document_root.as_os_str().as_encoded_bytes();
    out.bytes("SCRIPT_NAME", script.script_name.as_bytes());
    out.bytes(
        "SCRIPT_FILENAME",
        script.script_filename.as_os_str().as_encoded_bytes(),
    );
    out.bytes("PATH_INFO", script.path_info.as_bytes());
    if !script.path_info.is_empty() {
        out.bytes(
            "PATH_TRANSLATED",
            &[root, script.path_info.as_bytes()].concat(),
        );
    }
    out.bytes("QUERY_STRING", req.uri.query().unwrap_or("").as_bytes());
    let request_uri = req
        .client_uri
        .unwrap_or(req.uri)
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    out.bytes("REQUEST_URI", request_uri.as_bytes());
    out.bytes("DOCUMENT_ROOT", root);
}

/// The client, its body and who it is.
fn client_vars(out: &mut Put, req: &RequestFacts) {
    let remote = req.client.ip.to_canonical();
    out.display("REMOTE_ADDR", &remote);
    out.display("REMOTE_HOST", &remote);
    // Unknown behind a proxy that names no port: unset, not the proxy's.
    if let Some(port) = req.client.port {
        out.display("REMOTE_PORT", &port);
    }
    if let Some(ct) = req.headers.get(header::CONTENT_TYPE) {
        out.bytes("CONTENT_TYPE", ct.as_bytes());
    }
    if let Some(n) = req.content_length {
        out.display("CONTENT_LENGTH", &n);
    }
    if req.https {
        out.bytes("HTTPS", b"on");
    }
    if let Some(user) = req.user {
        out.bytes("AUTH_TYPE", b"Basic");
        out.bytes("REMOTE_USER", user.as_bytes());
    }
}

/// `REDIRECT_*`: 200, or the error an `[errors]` page is served for.
fn routing_vars(out: &mut Put, req: &RequestFacts) {
    match req.error {
        Some(e) => {
            out.display("REDIRECT_STATUS", &e.status);
            out.bytes("REDIRECT_URL", e.url.as_bytes());
            if let Some(q) = &e.query {
                out.bytes("REDIRECT_QUERY_STRING", q.as_bytes());
            }
        }
        None => out.bytes("REDIRECT_STATUS", b"200"),
    }
}

/// Headers that never become `HTTP_*`.
fn skipped(name: &str, pass_authorization: bool) -> bool {
    match name {
        "content-type" | "content-length" | "proxy" | "transfer-encoding" => true,
        "authorization" => !pass_authorization,
        _ => false,
    }
}

/// One `HTTP_*` per acceptable request header; repeats joined with `, `
/// (`; ` for Cookie, RFC 6265 §5.4). `skip_host`: HTTP_HOST comes from
/// the target instead.
fn add_http_headers(
    put: &mut dyn FnMut(&str, &[u8]),
    headers: &HeaderMap,
    pass_authorization: bool,
    skip_host: bool,
) {
    let mut var = String::with_capacity(64);
    let mut joined = Vec::new();
    for name in headers.keys() {
        let n = name.as_str();
        if skipped(n, pass_authorization)
            || (skip_host && name == header::HOST)
            || !n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            continue;
        }
        var.clear();
        var.push_str("HTTP_");
        var.extend(n.chars().map(|c| {
            if c == '-' {
                '_'
            } else {
                c.to_ascii_uppercase()
            }
        }));
        let mut values = headers.get_all(name).iter();
        let first = values.next().map(|v| v.as_bytes()).unwrap_or_default();
        let Some(second) = values.next() else {
            put(&var, first);
            continue;
        };
        let sep: &[u8] = if n == "cookie" { b"; " } else { b", " };
        joined.clear();
        joined.extend_from_slice(first);
        for v in std::iter::once(second).chain(values) {
            joined.extend_from_slice(sep);
            joined.extend_from_slice(v.as_bytes());
        }
        put(&var, &joined);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn facts_env(headers: &HeaderMap) -> Vec<EnvVar> {
        facts_env_for("/cgi-bin/t.sh/a%20b?x=1&y", headers)
    }

    fn facts_env_for(target: &str, headers: &HeaderMap) -> Vec<EnvVar> {
        let uri: Uri = target.parse().unwrap();
        let req = RequestFacts {
            method: &Method::POST,
            uri: &uri,
            version: Version::HTTP_11,
            headers,
            client: Client::from("[::ffff:127.0.0.1]:5555".parse::<SocketAddr>().unwrap()),
            local: "127.0.0.1:8992".parse().unwrap(),
            https: false,
            content_length: Some(3),
            client_uri: None,
            user: None,
            error: None,
            extra: &[],
        };
        let script = ScriptFacts {
            script_name: "/cgi-bin/t.sh",
            path_info: "/a b",
            script_filename: Path::new("/srv/cgi-bin/t.sh"),
            document_root: Path::new("/srv/static"),
        };
        build(&req, &script, &ServerFacts::new(true))
    }

    fn get<'a>(env: &'a [EnvVar], k: &str) -> Option<&'a [u8]> {
        env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_slice())
    }

    #[test]
    fn headers_cannot_forge_meta_variables() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("example.org:8080"));
        h.insert("proxy", HeaderValue::from_static("http://evil"));
        h.insert("x_forwarded_for", HeaderValue::from_static("1.2.3.4"));
        h.insert("content-length", HeaderValue::from_static("3"));
        h.insert("content_length", HeaderValue::from_static("999"));
        h.append("x-multi", HeaderValue::from_static("a"));
        h.append("x-multi", HeaderValue::from_static("b"));
        let env = facts_env(&h);
        assert_eq!(get(&env, "SERVER_NAME"), Some(&b"example.org"[..]));
        assert_eq!(get(&env, "HTTP_PROXY"), None);
        assert_eq!(get(&env, "HTTP_X_FORWARDED_FOR"), None);
        assert_eq!(get(&env, "HTTP_CONTENT_LENGTH"), None);
        assert_eq!(get(&env, "CONTENT_LENGTH"), Some(&b"3"[..]));
        assert_eq!(get(&env, "HTTP_X_MULTI"), Some(&b"a, b"[..]));
        assert_eq!(get(&env, "REMOTE_ADDR"), Some(&b"127.0.0.1"[..]));
        assert_eq!(get(&env, "PATH_TRANSLATED"), Some(&b"/srv/static/a b"[..]));
        assert_eq!(get(&env, "QUERY_STRING"), Some(&b"x=1&y"[..]));
        let names: Vec<_> = env.iter().map(|(n, _)| n).collect();
        let mut dedup = names.clone();
        dedup.sort();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len(), "a variable appears twice");
    }

    #[test]
    fn an_absolute_target_decides_the_host() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("other.example:81"));
        let env = facts_env_for("http://user@a.example:8080/cgi-bin/t.sh", &h);
        assert_eq!(get(&env, "SERVER_NAME"), Some(&b"a.example"[..]));
        assert_eq!(get(&env, "HTTP_HOST"), Some(&b"a.example:8080"[..]));
        assert_eq!(env.iter().filter(|(n, _)| n == "HTTP_HOST").count(), 1);
        let env = facts_env_for("http://[::1]/x", &h);
        assert_eq!(get(&env, "SERVER_NAME"), Some(&b"[::1]"[..]));
        // Origin-form: Host, as before.
        let env = facts_env_for("/x", &h);
        assert_eq!(get(&env, "SERVER_NAME"), Some(&b"other.example"[..]));
        assert_eq!(get(&env, "HTTP_HOST"), Some(&b"other.example:81"[..]));
    }
}
