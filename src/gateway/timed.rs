//! The timers on a script's response body, for CGI and FastCGI alike: the
//! idle timeout (no output for `idle` mid-response) and the deadline of a
//! whole response (a route's `request_timeout`).
//!
//! Either one cuts the body off with an error — the client sees an
//! aborted response, never a short one that looks complete — and drops
//! what produces it (which kills a CGI group, or closes a FastCGI
//! connection). Only data is progress: a frame with bytes in it restarts
//! the idle timer; empty frames and anything a transport does not hand
//! out (empty records, stderr) do not.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// `inner` with an idle timeout and, optionally, a deadline.
pub struct Timed<B> {
    /// `None` once a timer fired (dropped at once).
    inner: Option<B>,
    idle: Duration,
    idle_timer: Pin<Box<Sleep>>,
    deadline: Option<Pin<Box<Sleep>>>,
    /// `SCRIPT#request` (and the backend), for the log line.
    tag: String,
}

impl<B> Timed<B> {
    /// `inner`, cut off when it is silent for `idle`, or still not done at
    /// `deadline`.
    pub fn new(inner: B, idle: Duration, deadline: Option<Instant>, tag: String) -> Timed<B> {
        Timed {
            inner: Some(inner),
            idle,
            idle_timer: Box::pin(tokio::time::sleep(idle)),
            deadline: deadline.map(|at| Box::pin(tokio::time::sleep_until(at))),
            tag,
        }
    }

    /// A timer fired: which one, if any.
    fn expired(&mut self, cx: &mut Context<'_>) -> Option<io::Error> {
        if let Some(d) = self.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                tracing::warn!(
                    script = %self.tag,
                    "response not finished within the route's request_timeout: aborted"
                );
                return Some(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request_timeout: response not finished in time",
                ));
            }
        }
        if self.idle_timer.as_mut().poll(cx).is_ready() {
            tracing::warn!(
                script = %self.tag,
                "silent for {}s mid-response: aborted (raise --cgi-timeout, or the route's idle timeout, if it needs longer)",
                self.idle.as_secs()
            );
            return Some(io::Error::new(io::ErrorKind::TimedOut, "idle timeout"));
        }
        None
    }
}

impl<B> Body for Timed<B>
where
    B: Body<Data = Bytes, Error = io::Error> + Unpin,
{
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        if let Poll::Ready(frame) = Pin::new(inner).poll_frame(cx) {
            if let Some(Ok(f)) = &frame {
                if f.data_ref().is_some_and(|d| d.has_remaining()) {
                    let next = Instant::now() + this.idle;
                    this.idle_timer.as_mut().reset(next);
                }
            }
            return Poll::Ready(frame);
        }
        match this.expired(cx) {
            Some(e) => {
                this.inner = None;
                Poll::Ready(Some(Err(e)))
            }
            None => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map_or_else(|| SizeHint::with_exact(0), |b| b.size_hint())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    /// A body that hands out `data` frames, one per `every`, then stalls.
    struct Trickle {
        frames: Vec<&'static [u8]>,
        every: Pin<Box<Sleep>>,
        period: Duration,
    }

    impl Body for Trickle {
        type Data = Bytes;
        type Error = io::Error;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
            if self.frames.is_empty() {
                return Poll::Pending;
            }
            std::task::ready!(self.every.as_mut().poll(cx));
            let next = Instant::now() + self.period;
            self.every.as_mut().reset(next);
            let data = self.frames.remove(0);
            Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(data)))))
        }
    }

    fn trickle(frames: Vec<&'static [u8]>, period: Duration) -> Trickle {
        Trickle {
            frames,
            every: Box::pin(tokio::time::sleep(period)),
            period,
        }
    }

    #[tokio::test(start_paused = true)]
    async fn data_restarts_the_idle_timer_and_empty_frames_do_not() {
        let start = Instant::now();
        let idle = Duration::from_secs(2);
        // Data every second keeps a 2 s idle timer from firing.
        let body = trickle(vec![b"a", b"b", b"c"], Duration::from_secs(1));
        let mut body = Timed::new(body, idle, None, "t".into());
        for _ in 0..3 {
            assert!(body.frame().await.is_some_and(|f| f.is_ok()));
        }
        let err = body.frame().await.and_then(Result::err).map(|e| e.kind());
        assert_eq!(err, Some(io::ErrorKind::TimedOut));
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert!(body.frame().await.is_none(), "over after the error");
        // Empty frames every second are no progress.
        let body = trickle(vec![b"", b"", b"", b""], Duration::from_secs(1));
        let mut body = Timed::new(body, idle, None, "t".into());
        let start = Instant::now();
        while let Some(Ok(_)) = body.frame().await {}
        assert_eq!(start.elapsed(), Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_holds_whatever_the_progress() {
        let start = Instant::now();
        let body = trickle(vec![b"a"; 100], Duration::from_secs(1));
        let at = Instant::now() + Duration::from_millis(3500);
        let mut body = Timed::new(body, Duration::from_secs(10), Some(at), "t".into());
        let mut frames = 0;
        while let Some(Ok(_)) = body.frame().await {
            frames += 1;
        }
        assert_eq!((frames, start.elapsed()), (3, Duration::from_millis(3500)));
    }
}
