//! Reading file bytes: [`read_now`] for small files (one `pread` on the
//! calling thread, page-cache fast) and [`FileBody`], a byte range of a
//! file streamed in chunks.
//!
//! `FileBody` first tries each chunk with `preadv2(RWF_NOWAIT)` right on
//! the worker thread: when the bytes are in the page cache (the common
//! case for a busy site) that is one syscall and no thread hop. When the
//! kernel would have to wait for the disk it says `EAGAIN`, and that chunk
//! is read on tokio's blocking pool instead, so a cold file never stalls
//! the workers. A chunk is only read once hyper took the previous one, so
//! memory per download is a couple of chunks whatever the file size, and a
//! slow client holds no thread.
//!
//! Buffers are read into uninitialised capacity: zeroing them first would
//! be one more pass over every byte sent.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use crate::body::Body;

/// Bytes per read: a 1 MiB file is four reads; hyper queues at most a
/// couple of chunks per connection.
pub const CHUNK: usize = 256 * 1024;

/// Read `len` bytes at `offset` now (blocking if the disk must be read);
/// a short file means it shrank under us, which would break the promised
/// `Content-Length`.
pub fn read_now(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = BytesMut::with_capacity(len);
    read_append(file, offset, len, &mut buf)?;
    Ok(buf.freeze())
}

/// [`read_now`] into the end of `buf` (the front end puts a small file
/// right behind its response head, for one write).
pub fn read_append(file: &File, offset: u64, len: usize, buf: &mut BytesMut) -> io::Result<()> {
    let start = buf.len();
    let target = start + len;
    buf.reserve(len);
    while buf.len() < target {
        let at = offset + (buf.len() - start) as u64;
        if pread_into(file, buf, target, at, 0)? == 0 {
            return Err(shrank());
        }
    }
    Ok(())
}

/// Whether the byte at `offset` is in the page cache (one `RWF_NOWAIT`
/// read of it); None when the kernel cannot tell. An error past the end.
pub fn in_page_cache(file: &File, offset: u64) -> io::Result<Option<bool>> {
    if !NOWAIT_WORKS.load(Ordering::Relaxed) {
        return Ok(None);
    }
    let mut probe = BytesMut::with_capacity(1);
    match read_nowait(file, &mut probe, 1, offset) {
        Some(read) => read.map(|_| Some(true)),
        // Refused now, or refused for good (then the flag is down).
        None => Ok(NOWAIT_WORKS.load(Ordering::Relaxed).then_some(false)),
    }
}

/// The error for a file that ended before the length we announced.
pub fn shrank() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "file shrank while being sent")
}

/// `preadv2` of up to `len - buf.len()` bytes at `offset`, appended to
/// `buf`'s initialised part (`len` is the length `buf` may reach, within
/// its capacity); returns the count (0 at end of file).
fn pread_into(
    file: &File,
    buf: &mut BytesMut,
    len: usize,
    offset: u64,
    flags: libc::c_int,
) -> io::Result<usize> {
    let filled = buf.len();
    let spare = &mut buf.spare_capacity_mut()[..len - filled];
    let iov = libc::iovec {
        iov_base: spare.as_mut_ptr().cast(),
        iov_len: spare.len(),
    };
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    loop {
        // SAFETY: the iovec covers spare capacity we own, which the kernel
        // only writes to; the fd is open for the duration of the call.
        let n = unsafe { libc::preadv2(file.as_raw_fd(), &iov, 1, offset, flags) };
        if n >= 0 {
            // SAFETY: the kernel initialised the first n spare bytes.
            unsafe { buf.set_len(filled + n as usize) };
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Cleared when the filesystem refuses `RWF_NOWAIT` (then every chunk
/// goes through the blocking pool, as it would without the fast path).
static NOWAIT_WORKS: AtomicBool = AtomicBool::new(true);

/// One chunk from the page cache without blocking, or None if the kernel
/// would have to wait (or cannot tell).
fn read_cached(file: &File, offset: u64, len: usize) -> Option<io::Result<Bytes>> {
    let mut buf = BytesMut::with_capacity(len);
    read_nowait(file, &mut buf, len, offset).map(|read| read.map(|_| buf.freeze()))
}

/// [`pread_into`] with `RWF_NOWAIT`: None when the kernel would have to
/// wait for the disk (or cannot tell); reaching the end of the file is an
/// error, since callers only read within the size they were promised.
fn read_nowait(
    file: &File,
    buf: &mut BytesMut,
    len: usize,
    offset: u64,
) -> Option<io::Result<usize>> {
    if !NOWAIT_WORKS.load(Ordering::Relaxed) {
        return None;
    }
    match pread_into(file, buf, len, offset, libc::RWF_NOWAIT) {
        Ok(0) => Some(Err(shrank())),
        Ok(n) => Some(Ok(n)),
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => None,
        Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
            NOWAIT_WORKS.store(false, Ordering::Relaxed);
            None
        }
        Err(e) => Some(Err(e)),
    }
}

pub struct FileBody {
    file: Arc<File>,
    /// Where the next read starts.
    offset: u64,
    /// Bytes not yet handed to hyper.
    remaining: u64,
    chunk: usize,
    /// Try `RWF_NOWAIT` first (off only in tests of the slow path).
    try_cached: bool,
    /// A chunk being read on the blocking pool.
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    /// Stream `len` bytes of `file` from `offset`, `chunk` bytes at a time
    /// (`file` may be shared: every read gives its offset).
    pub fn new(file: Arc<File>, offset: u64, len: u64, chunk: usize) -> FileBody {
        FileBody {
            file,
            offset,
            remaining: len,
            chunk,
            try_cached: true,
            reading: None,
        }
    }

    pub fn boxed(self) -> Body {
        BodyExt::boxed(self)
    }

    /// The next chunk: from the page cache now, or from the blocking pool.
    fn poll_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Bytes>> {
        let want = self.remaining.min(self.chunk as u64) as usize;
        if self.reading.is_none() {
            if let Some(read) = self
                .try_cached
                .then(|| read_cached(&self.file, self.offset, want))
                .flatten()
            {
                return Poll::Ready(read);
            }
            let (file, offset) = (self.file.clone(), self.offset);
            self.reading = Some(tokio::task::spawn_blocking(move || {
                read_now(&file, offset, want)
            }));
        }
        let Some(reading) = self.reading.as_mut() else {
            return Poll::Ready(Err(io::Error::other("no read in flight")));
        };
        let joined = ready!(Pin::new(reading).poll(cx));
        self.reading = None;
        Poll::Ready(joined.unwrap_or_else(|e| Err(io::Error::other(e))))
    }
}

impl http_body::Body for FileBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if this.remaining == 0 {
            return Poll::Ready(None);
        }
        let chunk = match ready!(this.poll_chunk(cx)) {
            Ok(chunk) => chunk,
            Err(e) => return Poll::Ready(Some(Err(e))),
        };
        // A short read (part cached) is fine: the next poll goes on from here.
        let n = (chunk.len() as u64).min(this.remaining);
        this.offset += n;
        this.remaining -= n;
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        // A client that went away: nobody waits for the read in flight.
        if let Some(r) = self.reading.take() {
            r.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn streams_exactly_the_requested_range() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let cases = [
            (0u64, 1_000_000u64, 4096usize),
            (3, 777_777, 65_536),
            (999_999, 1, 7),
        ];
        for ((offset, len, chunk), try_cached) in
            cases.into_iter().flat_map(|c| [(c, true), (c, false)])
        {
            let mut body = FileBody::new(Arc::new(f.try_clone().unwrap()), offset, len, chunk);
            body.try_cached = try_cached;
            let got = body.collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_that_shrank_is_an_error_not_a_short_body() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 1000]).unwrap();
        for try_cached in [true, false] {
            let mut body = FileBody::new(Arc::new(f.try_clone().unwrap()), 0, 5000, 4096);
            body.try_cached = try_cached;
            assert!(body.collect().await.is_err());
        }
        assert!(read_now(&f, 0, 1001).is_err());
        assert_eq!(read_now(&f, 990, 10).unwrap(), vec![1u8; 10]);
    }
}
