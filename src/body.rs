//! The one response body type every handler returns, and small helpers to
//! make one. Bodies are streams: nothing here collects a body into memory.

use std::io;

use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full};

/// A streaming response body. Dropping it cancels whatever produces it
/// (for a CGI response, that kills the script's process group).
pub type Body = BoxBody<Bytes, io::Error>;

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
