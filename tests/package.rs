//! The Debian package, on this machine: `scripts/package.sh` builds it
//! around the test build of the binary, `dpkg -i` installs it, the files
//! are checked (paths, modes, conffile, units through `systemd-analyze
//! verify`, the completions and man page the binary generates), the
//! installed binary validates the packaged configuration and serves with
//! the unit's command line as systemd would start it (socket passed,
//! notify socket, www-data), then `dpkg --purge` must leave nothing behind. Needs root, as CI runs it; a
//! `cgihost` package already installed (a run that died half-way) is
//! purged first.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

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
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "dpkg -i needs root, as CI runs it"
    );
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
    let include = [
        "--path-include=/usr/share/man/*",
        "--path-include=/usr/share/doc/*",
    ];
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
    assert!(
        conffiles.contains("/etc/cgihost/cgihost.toml"),
        "{conffiles}"
    );

    // The units as systemd reads them (it finds the binary and the man page).
    let units = [
        "/usr/lib/systemd/system/cgihost.service",
        "/usr/lib/systemd/system/cgihost.socket",
    ];
    let verify = run("systemd-analyze", &["verify", units[0], units[1]]);
    let complaints = String::from_utf8_lossy(&verify.stderr);
    assert!(
        verify.status.success() && complaints.is_empty(),
        "{verify:?}"
    );
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
        assert!(
            service.lines().any(|l| l == line),
            "cgihost.service lacks {line}"
        );
    }

    // The installed binary: its version, the packaged configuration (with
    // the user the service switches to), its generated files.
    let version = ok("/usr/bin/cgihost", &["--version"]);
    assert_eq!(
        version.trim(),
        format!("cgihost {}", env!("CARGO_PKG_VERSION"))
    );
    let config = [
        "--config",
        "/etc/cgihost/cgihost.toml",
        "--user",
        "www-data",
    ];
    ok(
        "/usr/bin/cgihost",
        &[&["--check-config"], &config[..]].concat(),
    );
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
    serve_as_the_units_would(&service);
}

/// Run the service's `ExecStart=` as cgihost.socket and systemd would:
/// a listening socket on fd 3 (`LISTEN_FDS`), `NOTIFY_SOCKET` for
/// `Type=notify`. It must say READY=1, run as www-data, answer HTTP, and
/// on SIGTERM say STOPPING=1 and exit 0.
fn serve_as_the_units_would(service: &str) {
    let exec = service
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .expect("ExecStart=");
    let dir = tempfile::tempdir().unwrap();
    // cgihost sends its notifications after it became www-data.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    std::fs::set_permissions(&notify_path, std::fs::Permissions::from_mode(0o777)).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let launcher = "import os, socket, sys\n\
        s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(64)\n\
        open(sys.argv[1], 'w').write(str(s.getsockname()[1]))\n\
        os.dup2(s.fileno(), 3); os.set_inheritable(3, True)\n\
        os.environ['LISTEN_FDS'] = '1'; os.environ['LISTEN_PID'] = str(os.getpid())\n\
        os.execv(sys.argv[2], sys.argv[2:])\n";
    let port_file = dir.path().join("port");
    let child = Command::new("python3")
        .arg("-c")
        .arg(launcher)
        .arg(&port_file)
        .args(exec.split_whitespace())
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3");
    let mut child = KillOnDrop(child);
    let pid = child.0.id();
    let next_message = || {
        let mut buf = [0u8; 512];
        let n = notify.recv(&mut buf).expect("a notify message within 10 s");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let ready = next_message();
    let port = std::fs::read_to_string(&port_file).expect("the launcher's port");
    let uid = ok("id", &["-u", "www-data"]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let mut http = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
    http.write_all(b"GET /no-such-file HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    let _ = http.read_to_string(&mut answer);
    // SAFETY: signalling the child we started, by its pid.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let stopping = next_message();
    let exit = child.0.wait().expect("wait");
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready:?}");
    let uid_line = status
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .unwrap_or_default();
    assert!(
        uid_line.split_whitespace().skip(1).all(|u| u == uid.trim()),
        "{uid_line}"
    );
    assert!(answer.starts_with("HTTP/1.1 404 "), "{answer:?}");
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping:?}");
    assert_eq!(exit.code(), Some(0));
}

/// A child that is killed if the test fails before it exits.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}
