//! Bounds on reading a request body: a body that stalls or trickles is cut, so that no request holds
//! a connection (and a handler) open for ever.
//!
//! [`TimedBody`] wraps every request body. It ends with a [`BodyTimeout`] error once the first of
//! these passes (see [`BodyLimits`]):
//!
//! - no bytes for `idle` (the body stalls);
//! - fewer than `min_rate` bytes per second on average, counted from the start of the request after a
//!   grace of `idle` (the body trickles: one byte every few seconds keeps no idle timer from firing);
//! - `total` since the start of the request.
//!
//! Handlers turn the error into a 408 ([`crate::body::read_error`]); [`crate::Api::handle`] closes the
//! connection after it and logs the cut request.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::body::{BoxError, ReqBody};

/// How long a body may take; see the module docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BodyLimits {
    pub(crate) idle: Duration,
    pub(crate) min_rate: u64,
    pub(crate) total: Duration,
}

/// Why a body was cut.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BodyTimeout {
    /// What ran out, in words.
    pub(crate) why: String,
    /// Bytes read before the cut.
    pub(crate) read: u64,
}

impl std::fmt::Display for BodyTimeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body was cut after {} bytes: {}",
            self.read, self.why
        )
    }
}

impl std::error::Error for BodyTimeout {}

/// A request body with [`BodyLimits`].
pub(crate) struct TimedBody {
    inner: ReqBody,
    limits: BodyLimits,
    start: Instant,
    read: u64,
    /// Bytes read so far, for the log line of a cut request.
    progress: Arc<AtomicU64>,
    /// Fires at the earliest of the three limits for what has been read.
    sleep: Pin<Box<Sleep>>,
    /// Which limit `sleep` is set for.
    armed: Limit,
    cut: bool,
}

impl TimedBody {
    pub(crate) fn new(inner: ReqBody, limits: BodyLimits, progress: Arc<AtomicU64>) -> Self {
        let start = Instant::now();
        let mut body = TimedBody {
            inner,
            limits,
            start,
            read: 0,
            progress,
            sleep: Box::pin(tokio::time::sleep_until(start)),
            armed: Limit::Idle,
            cut: false,
        };
        body.rearm(start);
        body
    }

    /// The earliest deadline for what has been read, and which limit it is.
    fn deadline(&self, now: Instant) -> (Instant, Limit) {
        let l = &self.limits;
        let mut at = (now + l.idle, Limit::Idle);
        let total = self.start + l.total;
        if total < at.0 {
            at = (total, Limit::Total);
        }
        if l.min_rate > 0 {
            let due = Duration::from_secs_f64(self.read as f64 / l.min_rate as f64);
            let rate = self.start + l.idle.saturating_add(due);
            if rate < at.0 {
                at = (rate, Limit::Rate);
            }
        }
        at
    }

    fn rearm(&mut self, now: Instant) {
        let (at, limit) = self.deadline(now);
        self.sleep.as_mut().reset(at);
        self.armed = limit;
    }

    fn why(&self) -> String {
        let l = &self.limits;
        match self.armed {
            Limit::Idle => format!("no data for {:?}", l.idle),
            Limit::Total => format!("it took longer than {:?}", l.total),
            Limit::Rate => format!("it arrived slower than {} bytes per second", l.min_rate),
        }
    }
}

/// The limit a [`TimedBody`]'s timer is set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Limit {
    Idle,
    Total,
    Rate,
}

impl Body for TimedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        if this.cut {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref()
                    && !data.is_empty()
                {
                    this.read += data.len() as u64;
                    this.progress.store(this.read, Ordering::Relaxed);
                    this.rearm(Instant::now());
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(other) => Poll::Ready(other),
            Poll::Pending => match this.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.cut = true;
                    Poll::Ready(Some(Err(Box::new(BodyTimeout {
                        why: this.why(),
                        read: this.read,
                    }))))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.cut || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn limits() -> BodyLimits {
        BodyLimits {
            idle: Duration::from_secs(10),
            min_rate: 100,
            total: Duration::from_secs(60),
        }
    }

    /// A body that sends `chunk` bytes every `every`, `n` times, then ends.
    fn trickle(chunk: usize, every: Duration, n: usize) -> ReqBody {
        let s = futures::stream::unfold(0usize, move |i| async move {
            if i == n {
                return None;
            }
            tokio::time::sleep(every).await;
            Some((
                Ok::<_, BoxError>(Frame::data(Bytes::from(vec![b'x'; chunk]))),
                i + 1,
            ))
        });
        StreamBody::new(s).boxed_unsync()
    }

    async fn outcome(body: ReqBody) -> Result<u64, BodyTimeout> {
        let mut b = TimedBody::new(body, limits(), Arc::default());
        let mut n = 0u64;
        while let Some(f) = b.frame().await {
            match f {
                Ok(f) => n += f.into_data().map(|d| d.len() as u64).unwrap_or(0),
                Err(e) => return Err(*e.downcast::<BodyTimeout>().expect("a BodyTimeout")),
            }
        }
        Ok(n)
    }

    #[tokio::test(start_paused = true)]
    async fn a_steady_body_passes() {
        // 1000 bytes per second for 100 s: above the rate, but longer than the total.
        assert_eq!(
            outcome(trickle(1000, Duration::from_secs(1), 50)).await,
            Ok(50_000)
        );
        let e = outcome(trickle(1000, Duration::from_secs(1), 100))
            .await
            .expect_err("longer than the total");
        assert!(e.why.contains("longer than"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_is_cut_after_the_idle_timeout() {
        let e = outcome(trickle(10, Duration::from_secs(11), 1))
            .await
            .expect_err("stalled");
        assert_eq!(e.read, 0);
        assert!(e.why.contains("no data"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_trickling_body_is_cut_by_the_minimum_rate() {
        // One byte every 2 s never trips the 10 s idle timeout, but is far below 100 bytes per second.
        let e = outcome(trickle(1, Duration::from_secs(2), 1000))
            .await
            .expect_err("trickling");
        assert!(e.why.contains("slower than 100 bytes"), "{e}");
        assert!(e.read > 0 && e.read < 10, "{e}");
    }
}
