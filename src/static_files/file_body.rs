//! Reading file bytes: [`read_now`] for small files (one `pread` on the
//! calling thread, page-cache fast) and [`FileBody`], a byte range of a
//! file streamed in chunks.
//!
//! `FileBody` reads each chunk with `pread` on tokio's blocking pool and
//! starts the next read as soon as one chunk is handed to hyper, so disk
//! and socket overlap. At most one chunk is in flight and hyper queues a
//! bounded amount, so memory per download is a few chunks whatever the
//! file size. No thread is held while the client is slow: a read is only
//! started when the previous chunk was taken.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::task::JoinHandle;

use crate::body::Body;

/// Bytes per read. Large enough that a 1 MiB file takes four trips to the
/// blocking pool, small enough that hyper's queue stays bounded.
pub const CHUNK: usize = 256 * 1024;

/// Read `len` bytes at `offset` right now; a short read means the file
/// shrank under us, which would break the promised `Content-Length`.
pub fn read_now(file: &File, offset: u64, len: usize) -> io::Result<Bytes> {
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(Bytes::from(buf))
}

pub struct FileBody {
    file: Arc<File>,
    /// Where the next read starts.
    offset: u64,
    /// Bytes not yet asked of a read.
    unread: u64,
    /// Bytes not yet handed to hyper (for the size hint).
    unsent: u64,
    chunk: usize,
    reading: Option<JoinHandle<io::Result<Bytes>>>,
}

impl FileBody {
    /// Stream `len` bytes of `file` from `offset`, `chunk` bytes at a time.
    pub fn new(file: File, offset: u64, len: u64, chunk: usize) -> FileBody {
        FileBody {
            file: Arc::new(file),
            offset,
            unread: len,
            unsent: len,
            chunk,
            reading: None,
        }
    }

    pub fn boxed(self) -> Body {
        BodyExt::boxed(self)
    }

    fn start_read(&mut self) {
        if self.unread == 0 || self.reading.is_some() {
            return;
        }
        let n = self.unread.min(self.chunk as u64) as usize;
        let (file, offset) = (self.file.clone(), self.offset);
        self.offset += n as u64;
        self.unread -= n as u64;
        self.reading = Some(tokio::task::spawn_blocking(move || {
            read_now(&file, offset, n)
        }));
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
        if this.unsent == 0 {
            return Poll::Ready(None);
        }
        this.start_read();
        let Some(reading) = this.reading.as_mut() else {
            return Poll::Ready(None);
        };
        let joined = ready!(Pin::new(reading).poll(cx));
        this.reading = None;
        let chunk = match joined {
            Ok(Ok(chunk)) => chunk,
            Ok(Err(e)) => return Poll::Ready(Some(Err(e))),
            Err(e) => return Poll::Ready(Some(Err(io::Error::other(e)))),
        };
        this.unsent -= chunk.len() as u64;
        // Read ahead while hyper writes this chunk.
        this.start_read();
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.unsent == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.unsent)
    }
}

impl Drop for FileBody {
    fn drop(&mut self) {
        // A client that went away: the read in flight finishes on its own,
        // nobody waits for it.
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
        for (offset, len, chunk) in [
            (0u64, 1_000_000u64, 4096usize),
            (3, 777_777, 65_536),
            (999_999, 1, 7),
        ] {
            let body = FileBody::new(f.try_clone().unwrap(), offset, len, chunk);
            let got = body.collect().await.unwrap().to_bytes();
            assert_eq!(&got[..], &data[offset as usize..(offset + len) as usize]);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_file_that_shrank_is_an_error_not_a_short_body() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&[1u8; 1000]).unwrap();
        let body = FileBody::new(f, 0, 5000, 4096);
        assert!(body.collect().await.is_err());
    }
}
