//! A request body read straight from the socket of a cleartext HTTP/1
//! connection that the front end serves without hyper
//! (`server/static_h1`): a `Content-Length` body, some of whose bytes may
//! have come in with the head.
//!
//! Whoever takes the body uses one of two views:
//! - [`SocketBody`] is an ordinary body, read a frame at a time;
//! - [`Spliceable`] (a request extension) moves the body into a CGI
//!   script's stdin pipe with splice(2), socket to pipe inside the
//!   kernel, so its bytes are never copied through user space
//!   ([`Spliceable::splice_into`]).
//!
//! Never both. When both views are dropped, the connection learns how
//! many of the body's bytes are still unread on the socket (the receiver
//! [`socket_body`] returns), so that it can drain them, or close, before
//! it reads the next request: the body never reads past its own end.

use std::io;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::pipe::SpliceFlags;
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::unix::pipe;
use tokio::net::TcpStream;
use tokio::sync::{oneshot, Notify};

/// Bytes asked of one `recv` when the body is read as frames.
const READ_CHUNK: u64 = 64 * 1024;

/// Bytes asked of one splice(2) (it moves what the socket has, up to
/// what the pipe takes). The pipe keeps its default size: a pipe slot
/// holds a whole socket buffer fragment (up to 32 KiB on loopback), so
/// the default 16 slots already hold enough, and a larger pipe measured
/// no faster while it would pin more kernel memory per upload.
const SPLICE_CHUNK: usize = 1024 * 1024;

/// The body read as frames.
pub struct SocketBody {
    shared: Arc<Shared>,
}

/// The same body, for a consumer that can move it with splice(2); found
/// in the request's extensions.
#[derive(Clone)]
pub struct Spliceable(Arc<Shared>);

struct Shared {
    /// A duplicate of the connection's socket, with its own registration
    /// in the reactor: the body lives in tasks of its own, and borrows
    /// nothing of the connection.
    stream: TcpStream,
    /// Body bytes that came in with the head, not yet taken.
    prefix: Mutex<Bytes>,
    progress: Arc<Progress>,
    /// A frame was read from [`SocketBody`]: splicing is off (a consumer
    /// that replaced the body, an upload offload, has taken it already).
    framed: AtomicBool,
    bytes_in: Counter,
    bytes_spliced: Counter,
    /// The client waits for `100 Continue` (`Expect`) and has not had it.
    owed_continue: AtomicBool,
    /// Told how many bytes were never read, when both views are gone.
    done: Option<oneshot::Sender<u64>>,
}

/// How far the body has come off the socket, for the connection: it
/// watches for the client's close once the whole body is in.
pub struct Progress {
    /// Body bytes still on the socket.
    unread: AtomicU64,
    all_in: Notify,
}

impl Progress {
    /// Resolves once every byte of the body has left the socket.
    pub async fn all_in(&self) {
        loop {
            let notified = self.all_in.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if self.unread.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }
}

/// What [`socket_body`] makes: the two views, the progress, and the
/// receiver told, once both views are dropped, how many of the body's
/// bytes were never read.
pub struct Views {
    pub body: SocketBody,
    pub spliceable: Spliceable,
    pub progress: Arc<Progress>,
    pub unread_at_end: oneshot::Receiver<u64>,
}

/// The body of `length` bytes on `stream`, of which `prefix` (at most
/// `length` bytes) was read with the head, and whose client may wait for
/// `100 Continue` (`expects_continue`); its bytes are added to
/// `bytes_in` as they are read, and those spliced to `bytes_spliced` as
/// well.
pub fn socket_body(
    stream: &TcpStream,
    (prefix, length, expects_continue): (Bytes, u64, bool),
    (bytes_in, bytes_spliced): (&Counter, &Counter),
) -> io::Result<Views> {
    debug_assert!(prefix.len() as u64 <= length);
    // Close-on-exec (F_DUPFD_CLOEXEC): no program inherits the client.
    let dup = std::net::TcpStream::from(stream.as_fd().try_clone_to_owned()?);
    let (done, unread_at_end) = oneshot::channel();
    bytes_in.inc_by(prefix.len() as u64);
    let progress = Arc::new(Progress {
        unread: AtomicU64::new(length - prefix.len() as u64),
        all_in: Notify::new(),
    });
    let shared = Arc::new(Shared {
        stream: TcpStream::from_std(dup)?,
        prefix: Mutex::new(prefix),
        progress: progress.clone(),
        framed: AtomicBool::new(false),
        bytes_in: bytes_in.clone(),
        bytes_spliced: bytes_spliced.clone(),
        owed_continue: AtomicBool::new(expects_continue),
        done: Some(done),
    });
    Ok(Views {
        body: SocketBody {
            shared: shared.clone(),
        },
        spliceable: Spliceable(shared),
        progress,
        unread_at_end,
    })
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            let _ = done.send(self.unread());
        }
    }
}

impl Shared {
    fn take_prefix(&self) -> Bytes {
        let mut prefix = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
        std::mem::take(&mut *prefix)
    }

    fn prefix_len(&self) -> u64 {
        let prefix = self.prefix.lock().unwrap_or_else(|e| e.into_inner());
        prefix.len() as u64
    }

    fn unread(&self) -> u64 {
        self.progress.unread.load(Ordering::Acquire)
    }

    /// `n` more bytes were taken from the socket.
    fn took(&self, n: usize) {
        let before = self.progress.unread.fetch_sub(n as u64, Ordering::AcqRel);
        self.bytes_in.inc_by(n as u64);
        if before == n as u64 {
            self.progress.all_in.notify_waiters();
        }
    }
}

fn cut_short(unread: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("client closed with {unread} body bytes unsent"),
    )
}

impl http_body::Body for SocketBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let shared = &*self.shared;
        shared.framed.store(true, Ordering::Relaxed);
        let prefix = shared.take_prefix();
        if !prefix.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        let unread = shared.unread();
        if unread == 0 {
            return Poll::Ready(None);
        }
        // Never more than the body's own bytes: what follows on the
        // socket is the connection's next request.
        let mut buf = vec![0; unread.min(READ_CHUNK) as usize];
        loop {
            ready!(shared.stream.poll_read_ready(cx))?;
            match shared.stream.try_read(&mut buf) {
                Ok(0) => return Poll::Ready(Some(Err(cut_short(unread)))),
                Ok(n) => {
                    shared.took(n);
                    buf.truncate(n);
                    return Poll::Ready(Some(Ok(Frame::data(buf.into()))));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Poll::Ready(Some(Err(e))),
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.shared.unread() == 0 && self.shared.prefix_len() == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.shared.unread() + self.shared.prefix_len())
    }
}

/// Why [`Spliceable::splice_into`] stopped before the body's end.
#[derive(Debug)]
pub enum SpliceError {
    /// The client closed, or its socket failed.
    Client(io::Error),
    /// The client sent nothing, or the script read nothing, for this long.
    Stalled(Duration),
    /// The script closed its stdin (or exited).
    PipeClosed,
    /// splice(2) failed on the pipe.
    Pipe(io::Error),
}

impl Spliceable {
    /// Whether splice may take the body: no frame of it was read as a
    /// [`SocketBody`] (a consumer that did so has replaced the body).
    pub fn untouched(&self) -> bool {
        !self.0.framed.load(Ordering::Relaxed)
    }

    /// Tell a client that waits for it (`Expect: 100-continue`) to send
    /// its body: `100 Continue`, once, within `idle`. Called by the
    /// consumer before it reads the body, and before any response can
    /// have been written (the CGI engine calls it before it reads the
    /// program's head).
    pub async fn send_continue(&self, idle: Duration) -> io::Result<()> {
        if !self.0.owed_continue.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let mut line: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
        let stream = &self.0.stream;
        let write = async {
            while !line.is_empty() {
                stream.writable().await?;
                match stream.try_write(line) {
                    Ok(n) => line = &line[n..],
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        };
        tokio::time::timeout(idle, write)
            .await
            .unwrap_or_else(|_| Err(io::ErrorKind::TimedOut.into()))
    }

    /// Move the body into `pipe` (the write end of a script's stdin): the
    /// bytes read with the head by a write, the rest by splice(2). Each
    /// wait, for the client or for the script, is bounded by `idle`.
    /// Returns the bytes moved.
    pub async fn splice_into(
        &self,
        pipe: &mut pipe::Sender,
        idle: Duration,
    ) -> Result<u64, SpliceError> {
        let shared = &*self.0;
        let prefix = shared.take_prefix();
        let mut moved = prefix.len() as u64;
        write_to_pipe(pipe, &prefix, idle).await?;
        let stalled = |_| SpliceError::Stalled(idle);
        loop {
            // Readiness waits spend none of tokio's budget: a fast client
            // feeding a fast reader would hold the thread without this.
            tokio::task::consume_budget().await;
            let unread = shared.unread();
            if unread == 0 {
                return Ok(moved);
            }
            let client = shared.stream.readable();
            tokio::time::timeout(idle, client)
                .await
                .map_err(stalled)?
                .map_err(SpliceError::Client)?;
            let script = pipe.writable();
            tokio::time::timeout(idle, script)
                .await
                .map_err(stalled)?
                .map_err(SpliceError::Pipe)?;
            let want = unread.min(SPLICE_CHUNK as u64) as usize;
            let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
            match rustix::pipe::splice(&shared.stream, None, &*pipe, None, want, flags) {
                Ok(0) => return Err(SpliceError::Client(cut_short(unread))),
                Ok(n) => {
                    shared.took(n);
                    shared.bytes_spliced.inc_by(n as u64);
                    moved += n as u64;
                }
                Err(Errno::AGAIN) => {
                    if clear_readiness(&shared.stream, pipe) {
                        // Both sides ready, yet splice would block: it
                        // stops at TCP urgent data, which recv reads past.
                        moved += copy_chunk(shared, pipe, unread, idle).await?;
                    }
                }
                Err(Errno::INTR) => {}
                Err(Errno::PIPE) => return Err(SpliceError::PipeClosed),
                Err(
                    e @ (Errno::CONNRESET | Errno::NOTCONN | Errno::TIMEDOUT | Errno::CONNABORTED),
                ) => return Err(SpliceError::Client(e.into())),
                Err(e) => return Err(splice_failed(&shared.stream, e.into())),
            }
        }
    }
}

/// Write `bytes` into the pipe, each wait bounded by `idle`.
async fn write_to_pipe(
    pipe: &mut pipe::Sender,
    bytes: &[u8],
    idle: Duration,
) -> Result<(), SpliceError> {
    match tokio::time::timeout(idle, pipe.write_all(bytes)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(SpliceError::PipeClosed),
        Err(_) => Err(SpliceError::Stalled(idle)),
    }
}

/// Move up to `unread` bytes through memory, with `recv` and a write:
/// for where splice(2) cannot go on. Returns the bytes moved.
async fn copy_chunk(
    shared: &Shared,
    pipe: &mut pipe::Sender,
    unread: u64,
    idle: Duration,
) -> Result<u64, SpliceError> {
    let mut buf = vec![0; unread.min(READ_CHUNK) as usize];
    match shared.stream.try_read(&mut buf) {
        Ok(0) => Err(SpliceError::Client(cut_short(unread))),
        Ok(n) => {
            shared.took(n);
            write_to_pipe(pipe, &buf[..n], idle).await?;
            Ok(n as u64)
        }
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
            ) =>
        {
            Ok(0)
        }
        Err(e) => Err(SpliceError::Client(e)),
    }
}

/// splice(2) said "would block" without saying which side: ask poll(2)
/// about each, and forget the readiness of a side that is not ready
/// (inside `try_io`, so an event that comes meanwhile is not lost).
/// True when poll says both are ready.
fn clear_readiness(stream: &TcpStream, pipe: &pipe::Sender) -> bool {
    let client = stream.try_io(Interest::READABLE, || ready_now(stream, PollFlags::IN));
    let script = pipe.try_io(|| ready_now(pipe, PollFlags::OUT));
    client.is_ok() && script.is_ok()
}

/// Ok when `fd` is ready for `flags` (or has an error or hang-up to
/// report) right now; WouldBlock when not.
fn ready_now(fd: &impl AsFd, flags: PollFlags) -> io::Result<()> {
    let mut fds = [PollFd::new(fd, flags)];
    let zero = rustix::event::Timespec::default();
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(0) => Err(io::ErrorKind::WouldBlock.into()),
        // Ready, or poll itself failed: the next read or write will tell.
        Ok(_) | Err(_) => Ok(()),
    }
}

/// An error from splice(2) other than "would block" or a closed pipe:
/// the socket's if it has one, else the pipe's.
fn splice_failed(stream: &TcpStream, e: io::Error) -> SpliceError {
    match stream.take_error() {
        Ok(Some(client)) => SpliceError::Client(client),
        _ => SpliceError::Pipe(e),
    }
}
