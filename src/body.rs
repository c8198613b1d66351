//! The one response body type every handler returns, and small helpers to
//! make one. Bodies are streams: nothing here collects a body into memory.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{
    combinators::{BoxBody, UnsyncBoxBody},
    BodyExt, Empty, Full,
};

/// A streaming response body. Dropping it cancels whatever produces it
/// (for a CGI response, that kills the script's process group).
pub type Body = BoxBody<Bytes, io::Error>;

/// The request body as handlers see it: hyper's, one read straight from
/// the socket on the front end's own HTTP/1 path (`socket.rs`), or empty
/// after a local redirect or a rewrite. hyper's errors come as
/// `io::Error`s that wrap them.
pub type ReqBody = UnsyncBoxBody<Bytes, io::Error>;

mod socket;
pub use socket::{socket_body, Progress, SocketBody, SpliceError, Spliceable, Views};

/// An empty request body (a bodiless request read without hyper, a local
/// redirect's or an error page's GET).
pub fn empty_request() -> ReqBody {
    http_body_util::Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// hyper's request body as handlers take it, adding the bytes of each
/// data frame to `bytes_in` as it is read (a request without a body, most
/// of them, is not wrapped).
pub fn counted_request(
    body: hyper::body::Incoming,
    bytes_in: &prometheus_client::metrics::counter::Counter,
) -> ReqBody {
    if http_body::Body::is_end_stream(&body) {
        return body.map_err(io::Error::other).boxed_unsync();
    }
    Counted {
        inner: body,
        bytes_in: bytes_in.clone(),
    }
    .boxed_unsync()
}

/// A request body that counts its data (its size hint stays the
/// declared length, which the upload caps read).
struct Counted {
    inner: hyper::body::Incoming,
    bytes_in: prometheus_client::metrics::counter::Counter,
}

impl http_body::Body for Counted {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let polled = Pin::new(&mut self.inner)
            .poll_frame(cx)
            .map_err(io::Error::other);
        if let Poll::Ready(Some(Ok(frame))) = &polled {
            if let Some(data) = frame.data_ref() {
                self.bytes_in.inc_by(data.len() as u64);
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// No body at all.
pub fn empty() -> Body {
    Empty::<Bytes>::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A small body already in memory (error pages, redirects).
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

/// `body`, holding `guard` until the body is done or dropped (used to keep
/// offloaded upload files alive for exactly as long as the response).
pub fn with_guard<G: Send + Sync + Unpin + 'static>(body: Body, guard: G) -> Body {
    Guarded {
        inner: body,
        _guard: guard,
    }
    .boxed()
}

struct Guarded<G> {
    inner: Body,
    _guard: G,
}

impl<G: Send + Sync + Unpin + 'static> http_body::Body for Guarded<G> {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
