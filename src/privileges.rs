//! Process-level setup: listeners from systemd socket activation
//! (`LISTEN_FDS`), and `--user` — once every listener is bound and the TLS
//! key is read, cgihost gives up root for good, before it builds the
//! application, so every CGI program and spawned worker it ever starts
//! runs as that user too (no per-spawn setuid, nothing to forget).
//!
//! glibc's `setuid`/`setgid`/`initgroups` apply to every thread of the
//! process (it signals each one), so the runtime's threads change too; no
//! request is served before the switch.

use std::ffi::CString;
use std::net::TcpListener;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::unistd::{Gid, Uid};

/// A user to run as, looked up in the passwd database.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Look `name` up (a name, or a numeric uid).
pub fn lookup_user(name: &str) -> Result<User, String> {
    if name.is_empty() || name.contains('\0') {
        return Err(format!("user: '{name}' is not a user name"));
    }
    let lookup_failed = |e: nix::Error| format!("user: cannot look up '{name}': {e}");
    let found = match nix::unistd::User::from_name(name).map_err(lookup_failed)? {
        Some(user) => Some(user),
        None => match name.parse::<u32>() {
            Ok(uid) => nix::unistd::User::from_uid(Uid::from_raw(uid)).map_err(lookup_failed)?,
            Err(_) => None,
        },
    };
    let user = found.ok_or_else(|| format!("user: no such user '{name}'"))?;
    Ok(User {
        name: user.name,
        uid: user.uid.as_raw(),
        gid: user.gid.as_raw(),
    })
}

pub fn running_as_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Become `user` for good: supplementary groups, gid, then uid; then check
/// that root cannot be regained. Call before any thread is started.
pub fn drop_to(user: &User) -> Result<(), String> {
    if !running_as_root() {
        if nix::unistd::geteuid().as_raw() == user.uid {
            return Ok(());
        }
        return Err(format!(
            "user: switching to '{}' needs cgihost to start as root",
            user.name
        ));
    }
    let cname = CString::new(user.name.as_str()).map_err(|_| "user: bad name".to_string())?;
    let fail = |what: &str, e: nix::Error| format!("user: {what} failed: {e}");
    nix::unistd::initgroups(&cname, Gid::from_raw(user.gid)).map_err(|e| fail("initgroups", e))?;
    nix::unistd::setgid(Gid::from_raw(user.gid)).map_err(|e| fail("setgid", e))?;
    nix::unistd::setuid(Uid::from_raw(user.uid)).map_err(|e| fail("setuid", e))?;
    if user.uid != 0 && nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
        return Err("user: root privileges could be regained; refusing to run".into());
    }
    Ok(())
}

/// Listening sockets passed by systemd, if `LISTEN_PID` is us. The
/// variables are removed so nothing we start inherits them.
pub fn systemd_listeners() -> Result<Option<Vec<TcpListener>>, String> {
    // sd-notify reads LISTEN_PID/LISTEN_FDS (only when LISTEN_PID is us)
    // and marks the fds close-on-exec.
    let fds = sd_notify::listen_fds().map_err(|e| format!("LISTEN_FDS: {e}"));
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    let fds = fds?;
    match fds.len() {
        0 => Ok(None),
        1..=64 => fds
            .map(inherited_listener)
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        n => Err(format!(
            "LISTEN_FDS: {n} sockets is more than cgihost takes (64)"
        )),
    }
}

/// Take fd `fd`, handed over by systemd, as a listening TCP socket.
fn inherited_listener(fd: RawFd) -> Result<TcpListener, String> {
    // SAFETY: by the socket-activation protocol (checked by sd-notify:
    // LISTEN_PID is us, and `fd` is below 3 + LISTEN_FDS), systemd passed `fd` open
    // to this process, and nothing else here has taken it; it is only
    // borrowed for the checks, owned once they pass.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let is_socket = rustix::fs::fstat(borrowed).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Socket
    });
    if !is_socket {
        return Err(format!("LISTEN_FDS: fd {fd} is not a socket"));
    }
    let stream =
        rustix::net::sockopt::socket_type(borrowed).ok() == Some(rustix::net::SocketType::STREAM);
    let listening = rustix::net::sockopt::socket_acceptconn(borrowed).unwrap_or(false);
    if !stream || !listening {
        return Err(format!(
            "LISTEN_FDS: fd {fd} is not a listening stream socket (use ListenStream=, Accept=no)"
        ));
    }
    // SAFETY: as above; from here the listener owns (and closes) the fd.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let listener = TcpListener::from(owned);
    listener
        .local_addr()
        .map_err(|e| format!("LISTEN_FDS: fd {fd} is not a TCP listener: {e}"))?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("LISTEN_FDS: fd {fd}: {e}"))?;
    Ok(listener)
}

/// Raise the soft open-file limit to the hard one (as nginx's
/// `worker_rlimit_nofile` or Go's runtime do): every connection, CGI pipe
/// and backend socket is a descriptor, and 1024 is easy to reach.
pub fn raise_fd_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let lim = getrlimit(Resource::Nofile);
    let (Some(current), maximum) = (lim.current, lim.maximum) else {
        return u64::MAX; // unlimited already
    };
    match maximum {
        Some(max) if current < max => {
            let wanted = Rlimit {
                current: Some(max),
                maximum: Some(max),
            };
            if setrlimit(Resource::Nofile, wanted).is_ok() {
                return max;
            }
            current
        }
        _ => current,
    }
}
