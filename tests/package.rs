//! The Debian package, on this machine: `scripts/package.sh` builds it
//! around the test build of the binary, `dpkg -i` installs it, the files
//! are checked (paths, modes, conffile, units through `systemd-analyze
//! verify`, the completions and man page the binary generates), the
//! installed binary validates the packaged configuration, then `dpkg
//! --purge` must leave nothing behind. Needs root, as CI runs it; a
//! `cgihost` package already installed (a run that died half-way) is
//! purged first.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

/// Run and require success; stdout.
fn ok(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed() -> bool {
    let out = run("dpkg-query", &["-W", "-f=${db:Status-Status}", "cgihost"]);
    out.status.success() && out.stdout != b"not-installed"
}

/// Build the .deb into `dir`; its path.
fn build_package(dir: &Path) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package.sh");
    let out = Command::new(script)
        .env("CGIHOST_BIN", env!("CARGO_BIN_EXE_cgihost"))
        .env("DEB_OUT", dir)
        .output()
        .expect("run scripts/package.sh");
    assert!(out.status.success(), "scripts/package.sh: {out:?}");
    let deb = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .expect("a .deb in DEB_OUT");
    deb.to_string_lossy().into_owned()
}

/// (mode bits, owner name, group name) of `path`.
fn mode_of(path: &str) -> (u32, String, String) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let name = |db: &str, id: u32| {
        let line = ok("getent", &[db, &id.to_string()]);
        line.split(':').next().unwrap_or_default().to_string()
    };
    (
        meta.permissions().mode() & 0o7777,
        name("passwd", meta.uid()),
        name("group", meta.gid()),
    )
}

/// What the package puts on the machine, outside dpkg's own lists.
const MADE_BY_SCRIPTS: [&str; 4] = [
    "/var/log/cgihost",
    "/var/lib/cgihost",
    "/var/www/html",
    "/var/www",
];

#[test]
fn the_package_installs_checks_out_and_purges_clean() {
    // SAFETY: plain syscall.
    assert_eq!(unsafe { libc::geteuid() }, 0, "dpkg -i needs root, as CI runs it");
    if installed() {
        ok("dpkg", &["--purge", "cgihost"]);
    }
    let out_dir = tempfile::tempdir().unwrap();
    let deb = build_package(out_dir.path());
    // Every path in the package, and those the scripts make: which of
    // them the machine had before.
    let contents = ok("dpkg-deb", &["-c", &deb]);
    let mut paths: BTreeSet<String> = contents
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .map(|p| p.trim_start_matches('.').trim_end_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect();
    paths.extend(MADE_BY_SCRIPTS.map(String::from));
    let existed: BTreeSet<String> = paths
        .iter()
        .filter(|p| Path::new(p.as_str()).exists())
        .cloned()
        .collect();

    // Images that leave out man pages and docs (path-exclude) get them anyway.
    let include = ["--path-include=/usr/share/man/*", "--path-include=/usr/share/doc/*"];
    ok("dpkg", &[include[0], include[1], "-i", &deb]);
    let checked = std::panic::catch_unwind(check_installed);
    ok("dpkg", &["--purge", "cgihost"]);
    if let Err(panic) = checked {
        std::panic::resume_unwind(panic);
    }

    assert!(!installed(), "dpkg still lists cgihost after --purge");
    let left: Vec<&String> = paths
        .iter()
        .filter(|p| !existed.contains(*p) && Path::new(p.as_str()).exists())
        .collect();
    assert!(left.is_empty(), "left after purge: {left:?}");
    for gone in ["/etc/cgihost", "/var/log/cgihost", "/var/lib/cgihost"] {
        assert!(!Path::new(gone).exists(), "{gone} left after purge");
    }
    let state = "ls /var/lib/systemd/deb-systemd-helper-*/ /etc/systemd/system/*.wants/ \
                 2>/dev/null | grep cgihost || true";
    let systemd_state = ok("sh", &["-c", state]);
    assert_eq!(systemd_state, "", "systemd state left after purge");
}

/// Everything that must hold while the package is installed.
fn check_installed() {
    let root = ("root".to_string(), "root".to_string());
    for (path, mode) in [
        ("/usr/bin/cgihost", 0o755),
        ("/etc/cgihost/cgihost.toml", 0o644),
        ("/usr/lib/systemd/system/cgihost.service", 0o644),
        ("/usr/lib/systemd/system/cgihost.socket", 0o644),
        ("/usr/share/bash-completion/completions/cgihost", 0o644),
        ("/usr/share/zsh/vendor-completions/_cgihost", 0o644),
        ("/usr/share/fish/vendor_completions.d/cgihost.fish", 0o644),
        ("/usr/share/man/man1/cgihost.1.gz", 0o644),
        ("/usr/share/doc/cgihost/copyright", 0o644),
    ] {
        let (m, user, group) = mode_of(path);
        assert_eq!((m, (user, group)), (mode, root.clone()), "{path}");
    }
    let log = mode_of("/var/log/cgihost");
    assert_eq!(log, (0o750, "www-data".into(), "adm".into()));
    let conffiles = ok("dpkg-query", &["-W", "-f=${Conffiles}", "cgihost"]);
    assert!(conffiles.contains("/etc/cgihost/cgihost.toml"), "{conffiles}");

    // The units as systemd reads them (it finds the binary and the man page).
    let units = [
        "/usr/lib/systemd/system/cgihost.service",
        "/usr/lib/systemd/system/cgihost.socket",
    ];
    let verify = run("systemd-analyze", &["verify", units[0], units[1]]);
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(verify.status.success() && complaints.is_empty(), "{verify:?}");
    // Hardening: systemd's own exposure score stays "OK" (≤ 4.0 of 10).
    let score = ["security", "--offline=true", "--threshold=40", units[0]];
    let security = run("systemd-analyze", &score);
    assert!(security.status.success(), "{security:?}");
    let service = std::fs::read_to_string(units[0]).unwrap();
    for line in [
        "Type=notify",
        "ExecStart=/usr/bin/cgihost --config /etc/cgihost/cgihost.toml --user www-data",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
        "ReadWritePaths=-/var/log/cgihost",
    ] {
        assert!(service.lines().any(|l| l == line), "cgihost.service lacks {line}");
    }

    // The installed binary: its version, the packaged configuration (with
    // the user the service switches to), its generated files.
    let version = ok("/usr/bin/cgihost", &["--version"]);
    assert_eq!(version.trim(), format!("cgihost {}", env!("CARGO_PKG_VERSION")));
    let config = ["--config", "/etc/cgihost/cgihost.toml", "--user", "www-data"];
    ok("/usr/bin/cgihost", &[&["--check-config"], &config[..]].concat());
    for (shell, path) in [
        ("bash", "/usr/share/bash-completion/completions/cgihost"),
        ("zsh", "/usr/share/zsh/vendor-completions/_cgihost"),
        ("fish", "/usr/share/fish/vendor_completions.d/cgihost.fish"),
    ] {
        let expected = ok("/usr/bin/cgihost", &["--completions", shell]);
        assert_eq!(std::fs::read_to_string(path).unwrap(), expected, "{path}");
    }
    let page = ok("man", &["-P", "cat", "cgihost"]);
    assert!(page.contains("--status-path"), "man cgihost:\n{page}");
}
