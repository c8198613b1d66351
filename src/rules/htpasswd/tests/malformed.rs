//! Malformed htpasswd files: each error names the line and what is wrong,
//! and never repeats the offending field.

use super::*;

/// Each malformed text names its line and what is wrong.
fn assert_malformed(cases: &[(String, &str, &str)]) {
    for (text, line, what) in cases {
        let err = parse_err(text);
        assert!(err.starts_with(line), "{text:?}: {err}");
        assert!(err.contains(what), "{text:?}: {err} lacks {what:?}");
    }
}

#[test]
fn malformed_files_name_the_line() {
    let good = htpasswd(&["-m"], "u", "secret");
    let des = htpasswd(&["-d"], "u", "secret");
    let plain = htpasswd(&["-p"], "u", "s3cret-plain");
    let cases: Vec<(String, &str, &str)> = vec![
        ("alice\n".into(), "conf/users:1:", "no colon"),
        (
            ":{good}".replace("{good}", &good),
            "conf/users:1:",
            "empty user",
        ),
        (
            format!("# x\n\nu:{good}\nv:{plain}\n"),
            "conf/users:4:",
            "plaintext",
        ),
        (format!("u:{des}\n"), "conf/users:1:", "DES"),
        (format!("u:{good}\n\nu:{good}\n"), "conf/users:3:", "line 1"),
        (
            "u:$2y$05$tooshort\n".into(),
            "conf/users:1:",
            "malformed bcrypt",
        ),
        (
            format!("u:$2y$05${}\n", "a".repeat(53)),
            "conf/users:1:",
            "malformed bcrypt",
        ),
        (
            format!(
                "u:$2y$99${}\n",
                &libc_crypt("x", "$2b$04$abcdefghijklmnopqrstuu")[7..]
            ),
            "conf/users:1:",
            "cost 99",
        ),
        (
            format!(
                "u:$2y$03${}\n",
                &libc_crypt("x", "$2b$04$abcdefghijklmnopqrstuu")[7..]
            ),
            "conf/users:1:",
            "cost 3",
        ),
        (
            format!("u:$2x$05${}\n", "a".repeat(53)),
            "conf/users:1:",
            "$2x$",
        ),
        (
            "u:$y$j9T$abc$def\n".into(),
            "conf/users:1:",
            "unsupported hash kind $y$",
        ),
        (
            "u:$argon2id$v=19$m=1,t=1,p=1$abc$def\n".into(),
            "conf/users:1:",
            "$argon2id$",
        ),
    ];
    assert_malformed(&cases);
    let _ = (&des, &plain);
}

#[test]
fn malformed_hashes_name_the_line() {
    let des = htpasswd(&["-d"], "u", "secret");
    let plain = htpasswd(&["-p"], "u", "s3cret-plain");
    let cases: Vec<(String, &str, &str)> = vec![
        (
            "u:$apr1$saltsalt$short\n".into(),
            "conf/users:1:",
            "malformed $apr1$",
        ),
        (
            "u:$apr1$toolongsalt$i03Fxsqn2VVBrEJzUS/QU1\n".into(),
            "conf/users:1:",
            "malformed $apr1$",
        ),
        (
            "u:$apr1$nodollar\n".into(),
            "conf/users:1:",
            "malformed $apr1$",
        ),
        (
            "u:$5$rounds=999$salt$x\n".into(),
            "conf/users:1:",
            "rounds=999 out of range",
        ),
        (
            "u:$6$rounds=+5000$salt$x\n".into(),
            "conf/users:1:",
            "bad rounds=",
        ),
        (
            "u:$6$rounds=$salt$x\n".into(),
            "conf/users:1:",
            "bad rounds=",
        ),
        (
            "u:$6$salt$tooshort\n".into(),
            "conf/users:1:",
            "malformed $6$",
        ),
        ("u:$6$salt\n".into(), "conf/users:1:", "malformed $6$"),
        (
            format!("u:$6$abcdefghijklmnopq${}\n", "a".repeat(86)),
            "conf/users:1:",
            "salt longer than 16",
        ),
        (
            "u:{SHA}notbase64!\n".into(),
            "conf/users:1:",
            "malformed {SHA}",
        ),
        ("u:{SHA}YWJj\n".into(), "conf/users:1:", "malformed {SHA}"),
        (
            "u:realm:5f4dcc3b5aa765d61d8327deb882cf99\n".into(),
            "conf/users:1:",
            "htdigest",
        ),
        (
            "u:\n".into(),
            "conf/users:1:",
            "not a supported password hash",
        ),
    ];
    assert_malformed(&cases);
    // The offending field is never repeated: it may be a password.
    let err = parse_err(&format!("u:{plain}"));
    assert!(!err.contains("s3cret"), "{err}");
    assert!(err.contains("insecure"), "{err}");
    assert!(parse_err(&format!("u:{des}")).contains("insecure"));
}
