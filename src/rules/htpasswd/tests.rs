//! Tests of the htpasswd module, against hashes the real tools write.

use super::*;

mod malformed;
use std::process::Command;
use std::time::{Duration, Instant};

/// `htpasswd -nb<flags> user password`'s hash field.
fn htpasswd(flags: &[&str], user: &str, password: &str) -> String {
    let out = Command::new("htpasswd")
        .arg("-nb")
        .args(flags)
        .args([user, password])
        .output()
        .expect("htpasswd (Debian package apache2-utils; scripts/test.sh installs it)");
    assert!(out.status.success(), "htpasswd {flags:?}: {out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let line = text.lines().next().unwrap();
    let (u, hash) = line.split_once(':').unwrap();
    assert_eq!(u, user);
    hash.to_owned()
}

/// `openssl passwd -<kind> password`.
fn openssl(kind: &str, password: &str) -> String {
    let out = Command::new("openssl")
        .args(["passwd", kind, password])
        .output()
        .expect("openssl");
    assert!(out.status.success(), "openssl passwd {kind}: {out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Perl's crypt(), i.e. the system's libxcrypt, with a given setting.
fn libc_crypt(password: &str, setting: &str) -> String {
    let out = Command::new("perl")
        .args(["-e", "print crypt($ARGV[0], $ARGV[1])", password, setting])
        .output()
        .expect("perl");
    assert!(out.status.success(), "perl crypt: {out:?}");
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with(&setting[..4]), "crypt({setting}) = {hash}");
    hash
}

const ALICE_PW: &str = "correct horse: battery staple ünïcode";
const BOB_PW: &str = "hunter2";

/// Right password accepted; wrong, another user's, and an unknown
/// user's refused. `make` hashes a password.
fn check_kind(what: &str, prefix: &str, make: &dyn Fn(&str) -> String) {
    let alice = make(ALICE_PW);
    let bob = make(BOB_PW);
    assert!(alice.starts_with(prefix), "{what}: {alice}");
    assert!(bob.starts_with(prefix), "{what}: {bob}");
    let text = format!("# made by {what}\n\nalice:{alice}\nbob:{bob}:Bob B.\n");
    let file = Htpasswd::parse(&text, "test").unwrap_or_else(|e| panic!("{what}: {e}"));
    assert_eq!(file.users.len(), 2);
    assert!(file.verify("alice", ALICE_PW.as_bytes()), "{what}: alice");
    assert!(file.verify("bob", BOB_PW.as_bytes()), "{what}: bob");
    assert!(!file.verify("alice", BOB_PW.as_bytes()), "{what}: wrong");
    assert!(!file.verify("alice", b""), "{what}: empty");
    assert!(
        !file.verify("alice", &ALICE_PW.as_bytes()[1..]),
        "{what}: prefix cut"
    );
    assert!(
        !file.verify("bob", ALICE_PW.as_bytes()),
        "{what}: other user"
    );
    assert!(
        !file.verify("carol", ALICE_PW.as_bytes()),
        "{what}: missing"
    );
    assert!(!file.verify("Alice", ALICE_PW.as_bytes()), "{what}: case");
    assert!(!file.verify("", b""), "{what}: empty user");
}

#[test]
fn bcrypt_from_htpasswd() {
    check_kind("htpasswd -B", "$2y$05$", &|pw| htpasswd(&["-B"], "u", pw));
    check_kind("htpasswd -B -C 4", "$2y$04$", &|pw| {
        htpasswd(&["-B", "-C", "4"], "u", pw)
    });
}

#[test]
fn bcrypt_2b_2a_from_libxcrypt() {
    // htpasswd writes only $2y$; libxcrypt writes the version it is
    // given. The three differ only for passwords over 255 bytes.
    for (version, salt) in [
        ("2b", "abcdefghijklmnopqrstuu"),
        ("2a", "ZYXWVUTSRQPONMLKJIH./u"),
    ] {
        check_kind(
            &format!("crypt ${version}$"),
            &format!("${version}$04$"),
            &|pw| libc_crypt(pw, &format!("${version}$04${salt}")),
        );
    }
}

#[test]
fn apr1_from_htpasswd_and_openssl() {
    check_kind("htpasswd -m", "$apr1$", &|pw| htpasswd(&["-m"], "u", pw));
    check_kind("openssl -apr1", "$apr1$", &|pw| openssl("-apr1", pw));
    // More than 16 bytes and exact multiples take other branches.
    for pw in [
        "",
        "a",
        "0123456789abcdef",
        &"x".repeat(40),
        &"y".repeat(64),
    ] {
        let hash = openssl("-apr1", pw);
        let file = Htpasswd::parse(&format!("u:{hash}"), "t").unwrap();
        assert!(file.verify("u", pw.as_bytes()), "{pw:?} {hash}");
        assert!(!file.verify("u", format!("{pw}.").as_bytes()));
    }
}

#[test]
fn md5_crypt_from_openssl_and_libxcrypt() {
    check_kind("openssl -1", "$1$", &|pw| openssl("-1", pw));
    check_kind("crypt $1$", "$1$", &|pw| libc_crypt(pw, "$1$saltsalt$"));
}

#[test]
fn sha1_from_htpasswd() {
    check_kind("htpasswd -s", "{SHA}", &|pw| htpasswd(&["-s"], "u", pw));
}

#[test]
fn sha256_crypt() {
    check_kind("htpasswd -2", "$5$", &|pw| htpasswd(&["-2"], "u", pw));
    check_kind("htpasswd -2 -r 1234", "$5$rounds=1234$", &|pw| {
        htpasswd(&["-2", "-r", "1234"], "u", pw)
    });
    check_kind("openssl -5", "$5$", &|pw| openssl("-5", pw));
}

#[test]
fn sha512_crypt() {
    check_kind("htpasswd -5", "$6$", &|pw| htpasswd(&["-5"], "u", pw));
    check_kind("htpasswd -5 -r 2000", "$6$rounds=2000$", &|pw| {
        htpasswd(&["-5", "-r", "2000"], "u", pw)
    });
    check_kind("openssl -6", "$6$", &|pw| openssl("-6", pw));
}

#[test]
fn sha_crypt_explicit_default_rounds_and_short_salt() {
    // rounds=5000 written out is the same computation as no rounds=.
    let explicit = libc_crypt("pw", "$6$rounds=5000$abc");
    let implicit = libc_crypt("pw", "$6$abc");
    assert!(explicit.starts_with("$6$rounds=5000$abc$"));
    assert_eq!(explicit["$6$rounds=5000$".len()..], implicit["$6$".len()..]);
    for hash in [&explicit, &implicit, &libc_crypt("pw", "$5$rounds=1000$x")] {
        let file = Htpasswd::parse(&format!("u:{hash}"), "t").unwrap();
        assert!(file.verify("u", b"pw"), "{hash}");
        assert!(!file.verify("u", b"pW"), "{hash}");
    }
}

#[test]
fn mixed_kinds_in_one_file() {
    let lines = [
        format!("a:{}", htpasswd(&["-B", "-C", "4"], "a", "pa")),
        format!("b:{}", htpasswd(&["-m"], "b", "pb")),
        format!("c:{}", htpasswd(&["-s"], "c", "pc")),
        format!("d:{}", htpasswd(&["-2"], "d", "pd")),
        format!("e:{}", openssl("-6", "pe")),
    ];
    let file = Htpasswd::parse(&lines.join("\r\n"), "mixed").unwrap();
    for (user, pw) in [
        ("a", "pa"),
        ("b", "pb"),
        ("c", "pc"),
        ("d", "pd"),
        ("e", "pe"),
    ] {
        assert!(file.verify(user, pw.as_bytes()), "{user}");
        assert!(!file.verify(user, b"pz"), "{user}");
    }
    assert!(!file.verify("f", b"pa"));
    // The decoy is the costliest hash: SHA-512-crypt, 5000 rounds.
    assert!(matches!(file.decoy, Some(Hash::Sha512Crypt { .. })));
    let users = format!("{file:?}");
    assert_eq!(users, r#"Htpasswd { users: ["a", "b", "c", "d", "e"] }"#);
}

#[test]
fn empty_file_refuses_everyone() {
    let file = Htpasswd::parse("# nobody\n\n   \n", "empty").unwrap();
    assert!(file.users.is_empty() && file.decoy.is_none());
    assert!(!file.verify("alice", b""));
}

fn parse_err(text: &str) -> String {
    match Htpasswd::parse(text, "conf/users") {
        Ok(file) => panic!("{text:?} parsed: {file:?}"),
        Err(e) => e,
    }
}

#[test]
fn comments_trailing_fields_and_whitespace() {
    let a = htpasswd(&["-s"], "a", "pa");
    let b = htpasswd(&["-m"], "b", "pb");
    let text = format!("  # comment\n\t\na:{a}:Alice A.:extra\r\n  b:{b}  \r\n#c:{a}\n");
    let file = Htpasswd::parse(&text, "t").unwrap();
    assert_eq!(file.users.len(), 2);
    assert!(file.verify("a", b"pa"));
    assert!(file.verify("b", b"pb"));
    assert!(!file.verify("#c", b"pa"));
}

#[test]
fn load_reads_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("users");
    std::fs::write(
        &path,
        format!("u:{}\n", htpasswd(&["-B", "-C", "4"], "u", "pw")),
    )
    .unwrap();
    let file = Htpasswd::load(&path).unwrap();
    assert!(file.verify("u", b"pw"));

    let missing = dir.path().join("nope");
    let err = Htpasswd::load(&missing).unwrap_err();
    assert!(err.starts_with(&missing.display().to_string()), "{err}");
    assert!(err.contains("cannot read"), "{err}");

    std::fs::write(&path, b"# ok\nu:\xff\xfe\n").unwrap();
    let err = Htpasswd::load(&path).unwrap_err();
    assert_eq!(err, format!("{}:2: not valid UTF-8", path.display()));

    std::fs::write(&path, "# ok\n\nbroken\n").unwrap();
    let err = Htpasswd::load(&path).unwrap_err();
    assert!(err.starts_with(&format!("{}:3:", path.display())), "{err}");
}

/// Every prefix of every kind of hash, and a few mangled ones, parse to
/// Ok or Err and verify without panicking.
#[test]
fn no_panic_on_any_truncation() {
    let hashes = [
        htpasswd(&["-B", "-C", "4"], "u", "pw"),
        htpasswd(&["-m"], "u", "pw"),
        htpasswd(&["-s"], "u", "pw"),
        htpasswd(&["-2", "-r", "1000"], "u", "pw"),
        htpasswd(&["-5", "-r", "1000"], "u", "pw"),
        libc_crypt("pw", "$1$ab$"),
    ];
    for hash in &hashes {
        for end in 0..=hash.len() {
            for tail in ["", "é", "$", ":", "$$", "ü$x"] {
                let text = format!("u:{}{tail}", &hash[..end]);
                if let Ok(file) = Htpasswd::parse(&text, "t") {
                    let _ = file.verify("u", b"pw");
                    let _ = file.verify("v", b"pw");
                }
            }
        }
    }
}

fn header(v: &str) -> http::HeaderValue {
    http::HeaderValue::from_str(v).unwrap()
}

fn b64(s: &[u8]) -> String {
    Base64::encode_string(s)
}

#[test]
fn basic_credentials_table() {
    let ok = |u: &str, p: &[u8]| Some((u.to_owned(), p.to_vec()));
    type Credentials = Option<(String, Vec<u8>)>;
    let cases: Vec<(String, Credentials)> = vec![
        (
            format!("Basic {}", b64(b"alice:secret")),
            ok("alice", b"secret"),
        ),
        (
            format!("basic {}", b64(b"alice:secret")),
            ok("alice", b"secret"),
        ),
        (
            format!("BASIC   {}  ", b64(b"alice:secret")),
            ok("alice", b"secret"),
        ),
        (
            format!("Basic\t{}", b64(b"alice:secret")),
            ok("alice", b"secret"),
        ),
        (
            format!("Basic {}", b64(b"alice:a:b::c")),
            ok("alice", b"a:b::c"),
        ),
        (format!("Basic {}", b64(b"alice:")), ok("alice", b"")),
        (
            format!("Basic {}", b64("jürgen:pässword".as_bytes())),
            ok("jürgen", "pässword".as_bytes()),
        ),
        (
            format!("Basic {}", b64(b"bob:\xff\x00bin")),
            ok("bob", b"\xff\x00bin"),
        ),
        (format!("Basic {}", b64(b":secret")), None),
        (format!("Basic {}", b64(b"alicesecret")), None),
        (format!("Basic {}", b64(b"\xffalice:secret")), None),
        (format!("Bearer {}", b64(b"alice:secret")), None),
        (format!("Digest {}", b64(b"alice:secret")), None),
        (format!("Basicx {}", b64(b"alice:secret")), None),
        (format!("Basic{}", b64(b"alice:secret")), None),
        (b64(b"alice:secret"), None),
        ("Basic !!!!".into(), None),
        ("Basic YWxpY2U6c2VjcmV0".into(), ok("alice", b"secret")),
        // Unpadded, or with a space inside the token.
        ("Basic YWxpY2U6c2VjcmV0MQ".into(), None),
        ("Basic YWxpY2U6 c2VjcmV0".into(), None),
        ("Basic ".into(), None),
        ("Basic".into(), None),
        ("".into(), None),
    ];
    for (value, want) in cases {
        assert_eq!(basic_credentials(&header(&value)), want, "{value:?}");
    }
    // Bytes that are no UTF-8 in the header itself.
    let raw = http::HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap();
    assert_eq!(basic_credentials(&raw), None);
}

fn time(n: u32, f: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    for _ in 0..n {
        assert!(!std::hint::black_box(f()));
    }
    start.elapsed()
}

#[test]
fn missing_user_costs_a_bcrypt_check() {
    let text = format!(
        "alice:{}\nbob:{}\n",
        htpasswd(&["-B", "-C", "7"], "alice", "pa"),
        htpasswd(&["-B", "-C", "7"], "bob", "pb")
    );
    let file = Htpasswd::parse(&text, "t").unwrap();
    // Warm up, then alternate so that both see the same machine load.
    let _ = file.verify("alice", b"x");
    let (mut wrong, mut missing) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..3 {
        wrong += time(2, || file.verify("alice", b"wrong"));
        missing += time(2, || file.verify("nobody", b"wrong"));
    }
    assert!(
        missing.as_secs_f64() >= 0.3 * wrong.as_secs_f64(),
        "missing user {missing:?} vs wrong password {wrong:?}"
    );
}
