//! Process-level setup: listeners from systemd socket activation
//! (`LISTEN_FDS`), and `--user` — once every listener is bound and the TLS
//! key is read, cgihost gives up root for good, before it builds the
//! application, so every CGI program and spawned worker it ever starts
//! runs as that user too (no per-spawn setuid, nothing to forget).
//!
//! glibc's `setuid`/`setgid`/`initgroups` apply to every thread of the
//! process (it signals each one), so the runtime's threads change too; no
//! request is served before the switch.

use std::ffi::{CStr, CString};
use std::net::TcpListener;
use std::os::fd::{FromRawFd, RawFd};

/// First fd systemd passes (`SD_LISTEN_FDS_START`).
const LISTEN_FDS_START: RawFd = 3;

/// A user to run as, looked up in the passwd database.
#[derive(Debug, Clone)]
pub struct User {
    pub name: String,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
}

/// Look `name` up (a name, or a numeric uid).
pub fn lookup_user(name: &str) -> Result<User, String> {
    let cname = CString::new(name).map_err(|_| format!("user: '{name}' is not a user name"))?;
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call; `buf` outlives `pwd`'s use.
    let rc = unsafe {
        libc::getpwnam_r(
            cname.as_ptr(),
            &mut pwd,
            buf.as_mut_ptr(),
            buf.len(),
            &mut result,
        )
    };
    if rc == 0 && result.is_null() {
        if let Ok(uid) = name.parse::<libc::uid_t>() {
            // SAFETY: as above.
            let rc = unsafe {
                libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut result)
            };
            if rc == 0 && !result.is_null() {
                return Ok(user_from(&pwd));
            }
        }
    }
    if rc != 0 {
        return Err(format!(
            "user: cannot look up '{name}': {}",
            std::io::Error::from_raw_os_error(rc)
        ));
    }
    if result.is_null() {
        return Err(format!("user: no such user '{name}'"));
    }
    Ok(user_from(&pwd))
}

fn user_from(pwd: &libc::passwd) -> User {
    // SAFETY: getpwnam_r filled `pw_name` with a NUL-terminated string.
    let name = unsafe { CStr::from_ptr(pwd.pw_name) }
        .to_string_lossy()
        .into_owned();
    User {
        name,
        uid: pwd.pw_uid,
        gid: pwd.pw_gid,
    }
}

pub fn running_as_root() -> bool {
    // SAFETY: plain syscall.
    unsafe { libc::geteuid() == 0 }
}

/// Become `user` for good: supplementary groups, gid, then uid; then check
/// that root cannot be regained. Call before any thread is started.
pub fn drop_to(user: &User) -> Result<(), String> {
    if !running_as_root() {
        // SAFETY: plain syscall.
        let me = unsafe { libc::geteuid() };
        if me == user.uid {
            return Ok(());
        }
        return Err(format!(
            "user: switching to '{}' needs cgihost to start as root",
            user.name
        ));
    }
    let cname = CString::new(user.name.as_str()).map_err(|_| "user: bad name".to_string())?;
    let fail = |what: &str| format!("user: {what} failed: {}", std::io::Error::last_os_error());
    // SAFETY: plain syscalls with valid arguments.
    unsafe {
        if libc::initgroups(cname.as_ptr(), user.gid) != 0 {
            return Err(fail("initgroups"));
        }
        if libc::setgid(user.gid) != 0 {
            return Err(fail("setgid"));
        }
        if libc::setuid(user.uid) != 0 {
            return Err(fail("setuid"));
        }
        if user.uid != 0 && libc::setuid(0) == 0 {
            return Err("user: root privileges could be regained; refusing to run".into());
        }
    }
    Ok(())
}

/// Listening sockets passed by systemd, if `LISTEN_PID` is us. The
/// variables are removed so nothing we start inherits them.
pub fn systemd_listeners() -> Result<Option<Vec<TcpListener>>, String> {
    let Some(count) = std::env::var("LISTEN_FDS").ok() else {
        return Ok(None);
    };
    let for_us = std::env::var("LISTEN_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        == Some(std::process::id());
    std::env::remove_var("LISTEN_FDS");
    std::env::remove_var("LISTEN_PID");
    std::env::remove_var("LISTEN_FDNAMES");
    if !for_us {
        return Ok(None);
    }
    let count: RawFd = count
        .parse()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| format!("LISTEN_FDS: '{count}' is not a socket count"))?;
    (LISTEN_FDS_START..LISTEN_FDS_START + count)
        .map(|fd| {
            // SAFETY: fstat on an fd number; we only read the result.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            if unsafe { libc::fstat(fd, &mut st) } != 0
                || st.st_mode & libc::S_IFMT != libc::S_IFSOCK
            {
                return Err(format!("LISTEN_FDS: fd {fd} is not a socket"));
            }
            if sockopt(fd, libc::SO_TYPE) != Some(libc::SOCK_STREAM)
                || sockopt(fd, libc::SO_ACCEPTCONN) != Some(1)
            {
                return Err(format!(
                    "LISTEN_FDS: fd {fd} is not a listening stream socket (use ListenStream=, Accept=no)"
                ));
            }
            // SAFETY: systemd handed this fd to us; nothing else owns it.
            unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
            let listener = unsafe { TcpListener::from_raw_fd(fd) };
            listener
                .local_addr()
                .map_err(|e| format!("LISTEN_FDS: fd {fd} is not a TCP listener: {e}"))?;
            listener
                .set_nonblocking(true)
                .map_err(|e| format!("LISTEN_FDS: fd {fd}: {e}"))?;
            Ok(listener)
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// An integer socket option at SOL_SOCKET level.
fn sockopt(fd: RawFd, name: libc::c_int) -> Option<libc::c_int> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: valid fd number, buffer and length for an int option.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// Raise the soft open-file limit to the hard one (as nginx's
/// `worker_rlimit_nofile` or Go's runtime do): every connection, CGI pipe
/// and backend socket is a descriptor, and 1024 is easy to reach.
pub fn raise_fd_limit() -> u64 {
    // SAFETY: plain syscalls with a valid struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            return 0;
        }
        if lim.rlim_cur < lim.rlim_max {
            let wanted = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0 {
                return wanted.rlim_cur;
            }
        }
        lim.rlim_cur
    }
}
