//! Per-thread pools of the sendfile path's read and write buffers.
//!
//! A connection holds a buffer only while bytes are moving: it takes one
//! when the socket has something to read (or a response to write) and
//! gives it back as soon as it waits again. Idle and silent connections,
//! the normal state of a public server, then cost no buffer at all, and a
//! busy thread reuses the same few buffers instead of asking malloc for
//! new ones on every request. (nginx does the same with its header
//! buffers: allocated when bytes arrive, freed between requests.)

use std::cell::RefCell;

use bytes::BytesMut;

/// Buffers a thread keeps for reuse, per kind; more are freed.
const KEEP: usize = 64;

/// What a buffer is for, which sets its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    /// A request head: most fit in one read of this size.
    Input,
    /// A response head and a small file behind it, in one write.
    Output,
}

impl Kind {
    fn size(self) -> usize {
        match self {
            Kind::Input => 4 * 1024,
            Kind::Output => super::static_h1::GATHER,
        }
    }
}

thread_local! {
    static INPUT: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
    static OUTPUT: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

fn with_pool<R>(kind: Kind, f: impl FnOnce(&mut Vec<BytesMut>) -> R) -> R {
    let pool = match kind {
        Kind::Input => &INPUT,
        Kind::Output => &OUTPUT,
    };
    pool.with(|p| f(&mut p.borrow_mut()))
}

/// An empty buffer of `kind`'s size, from this thread's pool if it has one.
pub(super) fn take(kind: Kind) -> BytesMut {
    with_pool(kind, |pool| pool.pop()).unwrap_or_else(|| BytesMut::with_capacity(kind.size()))
}

/// Give `buf` back for reuse. A buffer that grew past twice its kind's
/// size (a large head, a gathered body) is freed rather than kept, so the
/// pool never holds more than `KEEP` ordinary buffers.
pub(super) fn give(kind: Kind, mut buf: BytesMut) {
    buf.clear();
    let size = kind.size();
    // Reclaims the space before the read position when nothing else shares
    // the allocation; otherwise (bytes handed out of it still live) the
    // buffer is not ours to reuse.
    if buf.capacity() > 2 * size || !buf.try_reclaim(size) {
        return;
    }
    with_pool(kind, |pool| {
        if pool.len() < KEEP {
            pool.push(buf);
        }
    });
}

/// Give back what `buf` holds, leaving it empty with no capacity.
pub(super) fn release(kind: Kind, buf: &mut BytesMut) {
    if buf.capacity() > 0 {
        give(kind, std::mem::take(buf));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_returned_buffer_is_reused_empty() {
        let mut buf = take(Kind::Input);
        assert_eq!(buf.capacity(), 4096);
        buf.extend_from_slice(b"GET / HTTP/1.1\r\n");
        let at = buf.as_ptr();
        give(Kind::Input, buf);
        let again = take(Kind::Input);
        assert!(again.is_empty());
        assert_eq!(again.as_ptr(), at, "the same allocation comes back");
    }

    #[test]
    fn a_buffer_still_shared_or_grown_is_not_kept() {
        let mut buf = take(Kind::Input);
        buf.extend_from_slice(&[b'x'; 100]);
        let shared = buf.split_to(10).freeze();
        let at = buf.as_ptr();
        give(Kind::Input, buf);
        assert_ne!(take(Kind::Input).as_ptr(), at);
        drop(shared);
        // (By capacity: the freed allocation's address may come back.)
        give(Kind::Input, BytesMut::with_capacity(64 * 1024));
        assert_eq!(take(Kind::Input).capacity(), Kind::Input.size());
    }

    #[test]
    fn release_leaves_no_capacity() {
        let mut buf = take(Kind::Output);
        buf.extend_from_slice(b"HTTP/1.1 200 OK\r\n");
        release(Kind::Output, &mut buf);
        assert_eq!(buf.capacity(), 0);
        assert_eq!(
            take(Kind::Output).capacity(),
            super::super::static_h1::GATHER
        );
    }
}
