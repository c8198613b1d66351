//! One direction of dependency: a module may use its own layer and the
//! layers below it, never one above. The test reads `src/` and fails on
//! the first `crate::…` path (a `use` or an inline path) that points up.
//!
//! Layers, bottom to top:
//! - leaf: body, conn, error, uri_path, stats, config, log, tls, meta
//! - handler: cgi, fastcgi, static_files, upload, status, gateway, rules
//! - app: app, router, site
//! - server: server and server/*
//! - entry: main, reload, privileges, cli, notify

use std::path::{Path, PathBuf};

const LAYERS: &[(&str, &[&str])] = &[
    (
        "leaf",
        &[
            "body", "conn", "error", "uri_path", "stats", "config", "log", "tls", "meta",
        ],
    ),
    (
        "handler",
        &[
            "cgi",
            "fastcgi",
            "static_files",
            "upload",
            "status",
            "gateway",
            "rules",
            "acme",
        ],
    ),
    ("app", &["app", "router", "site"]),
    ("server", &["server"]),
    ("entry", &["main", "reload", "privileges", "cli", "notify"]),
];

/// The layer index of a top-level module, if the table names it.
fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, mods)| mods.contains(&module))
}

/// The top-level module a file under `src/` belongs to (`cgi/env.rs` →
/// `cgi`, `server.rs` → `server`).
fn module_of(relative: &Path) -> String {
    let first = relative
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .unwrap_or_default();
    first.trim_end_matches(".rs").to_string()
}

/// The top-level modules a source file names through `crate::` (or
/// `cgihost::`, from the binary), including those inside `use crate::{…}`.
fn referenced_modules(source: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in source.lines() {
        let code = line.split("//").next().unwrap_or("");
        for root in ["crate::", "cgihost::"] {
            let mut rest = code;
            while let Some(at) = rest.find(root) {
                // `crate::` inside a longer identifier is not a path.
                let before = rest[..at].chars().next_back();
                rest = &rest[at + root.len()..];
                if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                    continue;
                }
                if let Some(group) = rest.strip_prefix('{') {
                    let inner = group.split('}').next().unwrap_or("");
                    for item in inner.split(',') {
                        push_ident(&mut found, item.trim());
                    }
                } else {
                    push_ident(&mut found, rest);
                }
            }
        }
    }
    found
}

fn push_ident(found: &mut Vec<String>, text: &str) {
    let ident: String = text
        .chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect();
    if !ident.is_empty() && !found.contains(&ident) {
        found.push(ident);
    }
}

/// Every upward import in the files given, as readable lines.
fn violations(files: &[(PathBuf, String)]) -> Vec<String> {
    let mut bad = Vec::new();
    for (relative, source) in files {
        let module = module_of(relative);
        let Some(own) = layer(&module) else {
            continue;
        };
        for used in referenced_modules(source) {
            if let Some(theirs) = layer(&used) {
                if theirs > own {
                    bad.push(format!(
                        "src/{} ({} layer) uses crate::{used} ({} layer)",
                        relative.display(),
                        LAYERS[own].0,
                        LAYERS[theirs].0
                    ));
                }
            }
        }
    }
    bad
}

fn sources(dir: &Path, base: &Path, out: &mut Vec<(PathBuf, String)>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("read src/")
        .map(|e| e.expect("dir entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            sources(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            let source = std::fs::read_to_string(&path).expect("read source");
            let relative = path.strip_prefix(base).expect("under src").to_path_buf();
            out.push((relative, source));
        }
    }
}

fn src_files() -> Vec<(PathBuf, String)> {
    let base = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&base, &base, &mut files);
    files
}

#[test]
fn no_module_imports_a_higher_layer() {
    let bad = violations(&src_files());
    assert!(bad.is_empty(), "upward imports:\n{}", bad.join("\n"));
}

#[test]
fn every_module_has_a_layer() {
    let unknown: Vec<String> = src_files()
        .iter()
        .map(|(p, _)| module_of(p))
        .filter(|m| m != "lib" && layer(m).is_none())
        .collect();
    assert!(
        unknown.is_empty(),
        "modules missing from the layer table: {unknown:?}"
    );
}

/// The checker itself can fail: the imports this layering removed, put
/// back, are each reported.
#[test]
fn the_checker_reports_each_upward_import() {
    let cases = [
        ("cgi/mod.rs", "use crate::server::ConnInfo;"),
        ("fastcgi/exchange.rs", "use crate::router::ReqBody;"),
        (
            "config.rs",
            "let lines = crate::fastcgi::FastCgi::route_lines(self);",
        ),
        (
            "log.rs",
            "use crate::{body::Body, server::{ConsumerWatch, InFlight}};",
        ),
        ("status.rs", "use crate::router::App;"),
        ("server/connection.rs", "use crate::reload::Live;"),
        ("main.rs", "use cgihost::server::Listener;"),
    ];
    for (file, line) in cases {
        let files = vec![(PathBuf::from(file), format!("//! doc\n{line}\n"))];
        let found = violations(&files);
        let expect_upward = file != "main.rs";
        assert_eq!(
            !found.is_empty(),
            expect_upward,
            "{file}: {line} → {found:?}"
        );
    }
    // A comment or a longer identifier is not an import.
    let quiet = vec![(
        PathBuf::from("body.rs"),
        "// see crate::server\nlet mycrate::server = 1;\n".to_string(),
    )];
    assert!(violations(&quiet).is_empty());
}

/// Every file under `src/` is short enough to read in one sitting.
#[test]
fn no_source_file_is_over_500_lines() {
    let long: Vec<String> = src_files()
        .iter()
        .map(|(p, text)| (p, text.lines().count()))
        .filter(|(_, n)| *n > 500)
        .map(|(p, n)| format!("src/{} has {n} lines", p.display()))
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

/// The length of each `fn` in `source` (from its line to the line that
/// closes it at the same indentation), by name.
fn function_lengths(source: &str) -> Vec<(String, usize)> {
    let lines: Vec<&str> = source.lines().collect();
    let mut found = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let code = line.trim_start();
        let indent = line.len() - code.len();
        let words: Vec<&str> = code.split_whitespace().collect();
        let Some(at) = words.iter().position(|w| *w == "fn") else {
            continue;
        };
        let before_ok = words[..at]
            .iter()
            .all(|w| matches!(*w, "pub" | "async" | "const" | "unsafe") || w.starts_with("pub("));
        if !before_ok || code.ends_with(';') || at + 1 >= words.len() {
            continue;
        }
        let name: String = words[at + 1]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        let close = " ".repeat(indent) + "}";
        let end = lines[i + 1..]
            .iter()
            .position(|l| l.starts_with(&close) && l.len() - l.trim_start().len() == indent)
            .map_or(lines.len(), |k| i + 1 + k);
        found.push((name, end - i + 1));
    }
    found
}

/// No function is over 80 lines.
#[test]
fn no_function_is_over_80_lines() {
    let long: Vec<String> = src_files()
        .iter()
        .flat_map(|(p, text)| {
            function_lengths(text)
                .into_iter()
                .filter(|(_, n)| *n > 80)
                .map(move |(name, n)| format!("src/{}: fn {name} has {n} lines", p.display()))
        })
        .collect();
    assert!(long.is_empty(), "{}", long.join("\n"));
}

/// The length checker measures what it should.
#[test]
fn function_lengths_are_measured() {
    let body = "    let x = 1;\n".repeat(90);
    let source = format!("pub fn short() {{\n}}\n\nasync fn long() {{\n{body}}}\n");
    let found = function_lengths(&source);
    assert_eq!(found, vec![("short".into(), 2), ("long".into(), 92)]);
}
