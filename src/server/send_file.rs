//! Writing to a plain TCP socket for `static_h1.rs`: a buffer, and a
//! static file's bytes ([`FileRange`]) with sendfile(2), so they go from
//! the page cache to the socket without passing through user space.
//!
//! sendfile reads the page cache on the calling thread, so a cold file
//! would stall a tokio worker on the disk. Before each 1 MiB window of the
//! file, cachestat(2) says whether all of it is cached (where that call is
//! missing: `RWF_NOWAIT` reads of the window's first and last bytes); if
//! not, the window is read on the blocking pool first (pulling it into the
//! cache), and then sent from there. After a wait for a slow client the
//! check is made again.
//!
//! Where sendfile cannot read a file (a file system without splice
//! support), the bytes are read into memory and written instead.
//!
//! Every wait for the socket is bounded by `send_timeout`: a client that
//! takes no bytes for that long gets a `TimedOut` error, and the caller
//! drops the connection.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rustix::net::{RecvFlags, SendFlags};
use tokio::io::Interest;
use tokio::net::TcpStream;

use bytes::{Bytes, BytesMut};

use crate::static_files::{in_page_cache, read_append, read_now, shrank, FileRange};

/// Bytes checked for residence in the page cache at a time.
const WINDOW: u64 = 1024 * 1024;

/// Read size when sendfile cannot be used.
const COPY_CHUNK: u64 = 256 * 1024;

/// Write all of `buf`; `more`: file bytes follow at once (`MSG_MORE`, so
/// the head shares a packet with them).
pub async fn write_all(
    stream: &TcpStream,
    mut buf: &[u8],
    more: bool,
    send_timeout: Duration,
) -> io::Result<()> {
    let flags = if more {
        SendFlags::MORE
    } else {
        SendFlags::empty()
    };
    while !buf.is_empty() {
        match try_send(stream, buf, flags) {
            Ok(n) => buf = &buf[n..],
            Err(e) => wait_unless_fatal(stream, e, send_timeout).await?,
        }
    }
    Ok(())
}

/// Send what the socket takes of `buf` now (never `SIGPIPE`). By a raw
/// system call, as [`try_recv`].
pub fn try_send(stream: &TcpStream, buf: &[u8], flags: SendFlags) -> io::Result<usize> {
    stream.try_io(Interest::WRITABLE, || {
        Ok(rustix::net::send(stream, buf, flags | SendFlags::NOSIGNAL)?)
    })
}

/// Read what the socket has into `buf`'s spare capacity, as tokio's
/// `try_read_buf` does but by a raw system call: glibc's `recv` and
/// `send` are cancellation points, whose bookkeeping costs two calls more
/// each (a few percent of a small static request).
pub fn try_recv(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    stream.try_io(Interest::READABLE, || {
        let spare = buf.spare_capacity_mut();
        let ((filled, _), _) = rustix::net::recv(stream, spare, RecvFlags::empty())?;
        let n = filled.len();
        // SAFETY: recv initialised the first `n` bytes of the spare
        // capacity (`filled` is them).
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    })
}

/// Send `range` with sendfile, adding each chunk sent to `sent`.
pub async fn send_file(
    stream: &TcpStream,
    range: &FileRange,
    send_timeout: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    let end = range.offset + range.len;
    let mut at = range.offset;
    // Bytes before this offset were found (or made) resident.
    let mut cached_until = at;
    while at < end {
        if at >= cached_until {
            // A client that keeps up never makes sendfile wait: yield
            // between windows so it cannot hold the worker.
            tokio::task::consume_budget().await;
            let window_end = (at + WINDOW).min(end);
            if !window_cached(range, at, window_end)? {
                read_into_cache(range, at, window_end - at).await?;
            }
            cached_until = window_end;
        }
        let count = (cached_until - at) as usize;
        let mut offset = libc::off_t::try_from(at).map_err(|_| io::ErrorKind::InvalidInput)?;
        let result = stream.try_io(Interest::WRITABLE, || {
            // SAFETY: both fds are open for the duration of the call and
            // `offset` is a local the kernel updates.
            let n = unsafe {
                libc::sendfile(
                    stream.as_raw_fd(),
                    range.file.as_raw_fd(),
                    &mut offset,
                    count,
                )
            };
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(n as u64)
        });
        match result {
            Ok(0) => return Err(shrank()),
            Ok(n) => {
                at += n;
                *sent += n;
            }
            Err(e) if at == range.offset && sendfile_unsupported(&e) => {
                return copy_through_memory(stream, range, send_timeout, sent).await;
            }
            Err(e) => {
                wait_unless_fatal(stream, e, send_timeout).await?;
                // A slow client: the rest of the window may have been
                // evicted while we waited.
                cached_until = at;
            }
        }
    }
    Ok(())
}

/// Whether `[from, to)` is in the page cache: exactly, with cachestat(2)
/// (Linux 6.5+), else by its first and last bytes (eviction takes a
/// window's older pages first, so both ends are checked). True when the
/// kernel cannot tell: then sendfile reads as it must, as in nginx without
/// `aio`.
fn window_cached(range: &FileRange, from: u64, to: u64) -> io::Result<bool> {
    if let Some(cached) = cachestat_resident(&range.file, from, to) {
        return Ok(cached);
    }
    for probe in [from, to - 1] {
        if in_page_cache(&range.file, probe)? == Some(false) {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Cleared when cachestat(2) is missing or refused (old kernel, seccomp).
static CACHESTAT_WORKS: AtomicBool = AtomicBool::new(true);

/// Whether every page of `[from, to)` is cached, by cachestat(2); None
/// when the call is not available.
fn cachestat_resident(file: &File, from: u64, to: u64) -> Option<bool> {
    /// `struct cachestat_range` and `struct cachestat` of the kernel's UAPI.
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    /// The same number on every architecture (added after the tables
    /// were unified).
    const SYS_CACHESTAT: libc::c_long = 451;
    if !CACHESTAT_WORKS.load(Ordering::Relaxed) {
        return None;
    }
    let range = Range {
        off: from,
        len: to - from,
    };
    let mut stat = Stat::default();
    // SAFETY: both structs are #[repr(C)] copies of the UAPI ones and live
    // across the call; the fd is open; flags must be 0.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            file.as_raw_fd(),
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    if rc != 0 {
        // Missing or forbidden: stop asking. Anything else (a file system
        // that cannot say): the probes answer for this window.
        if matches!(
            io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOSYS | libc::EPERM)
        ) {
            CACHESTAT_WORKS.store(false, Ordering::Relaxed);
        }
        return None;
    }
    let page = page_size();
    let pages = (to - 1) / page - from / page + 1;
    Some(stat.nr_cache >= pages)
}

fn page_size() -> u64 {
    static PAGE: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        u64::try_from(size).ok().filter(|&s| s > 0).unwrap_or(4096)
    })
}

/// The file system cannot splice: sendfile fails before sending anything.
fn sendfile_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
    )
}

/// `range` read into a buffer and written, chunk by chunk, on the blocking
/// pool's reads: for files sendfile cannot take.
async fn copy_through_memory(
    stream: &TcpStream,
    range: &FileRange,
    send_timeout: Duration,
    sent: &mut u64,
) -> io::Result<()> {
    let end = range.offset + range.len;
    let mut at = range.offset;
    while at < end {
        let len = (end - at).min(COPY_CHUNK);
        let chunk = read_blocking(range, at, len).await?;
        write_all(stream, &chunk, false, send_timeout).await?;
        at += len;
        *sent += len;
    }
    Ok(())
}

/// `WouldBlock`: wait (up to `send_timeout`) until the socket takes bytes
/// again; `Interrupted`: go on; anything else is the caller's error.
async fn wait_unless_fatal(
    stream: &TcpStream,
    error: io::Error,
    send_timeout: Duration,
) -> io::Result<()> {
    match error.kind() {
        io::ErrorKind::Interrupted => Ok(()),
        io::ErrorKind::WouldBlock => {
            match tokio::time::timeout(send_timeout, stream.writable()).await {
                Ok(ready) => ready,
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("client took no data for {}s", send_timeout.as_secs()),
                )),
            }
        }
        _ => Err(error),
    }
}

/// Read `len` bytes of the file at `offset` on the blocking pool, so that
/// the sendfile that follows finds them in the page cache. The bytes are
/// not needed here: they pass through one small buffer (a window's worth
/// per cold connection would add up on a busy disk).
async fn read_into_cache(range: &FileRange, offset: u64, len: u64) -> io::Result<()> {
    const CHUNK: u64 = 64 * 1024;
    on_blocking_pool(range, move |file| {
        let mut buf = BytesMut::with_capacity(CHUNK as usize);
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let want = (end - at).min(CHUNK);
            buf.clear();
            read_append(file, at, want as usize, &mut buf)?;
            at += want;
        }
        Ok(())
    })
    .await
}

/// `len` bytes of the file at `offset`, read on the blocking pool.
async fn read_blocking(range: &FileRange, offset: u64, len: u64) -> io::Result<Bytes> {
    on_blocking_pool(range, move |file| read_now(file, offset, len as usize)).await
}

/// Run `read` on the range's file on the blocking pool.
async fn on_blocking_pool<T: Send + 'static>(
    range: &FileRange,
    read: impl FnOnce(&File) -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    // The descriptor may be the open-file cache's: share it (every read
    // gives its offset), no `dup`.
    let file = range.file.clone();
    tokio::task::spawn_blocking(move || read(&file))
        .await
        .unwrap_or_else(|e| Err(io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A file leaves the page cache and part of it comes back.
    #[test]
    fn cachestat_tells_cached_from_evicted() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![7u8; 3 << 20]).unwrap();
        f.sync_all().unwrap();
        let len = 3u64 << 20;
        // Where the kernel refuses cachestat (ENOSYS, EPERM) the probes
        // answer instead; `window_cached` is checked either way.
        let exact = |f: &File, from, to, want| {
            let got = cachestat_resident(f, from, to);
            let refused = !CACHESTAT_WORKS.load(Ordering::Relaxed);
            assert!(got == Some(want) || (got.is_none() && refused), "{got:?}");
        };
        exact(&f, 0, len, true);
        // The kernel may keep just-written pages a moment longer (per-CPU
        // LRU batches): advise again until the probes see them gone.
        for _ in 0..100 {
            // SAFETY: a plain advice call on an open fd.
            let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
            assert_eq!(rc, 0);
            let ends = [0, len / 2, len - 1].map(|at| in_page_cache(&f, at).unwrap());
            if ends.iter().all(|c| *c != Some(true)) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        exact(&f, 0, len, false);
        // Read the middle MiB back in: it is cached, the whole is not.
        let mut middle = vec![0u8; 1 << 20];
        std::os::unix::fs::FileExt::read_exact_at(&f, &mut middle, 1 << 20).unwrap();
        exact(&f, 1 << 20, 2 << 20, true);
        exact(&f, 0, len, false);
        let range = FileRange {
            file: std::sync::Arc::new(f),
            offset: 0,
            len,
        };
        assert!(!window_cached(&range, 0, len).unwrap());
        assert!(window_cached(&range, 1 << 20, 2 << 20).unwrap());
    }
}
