//! A response body that writes its request's access line when it is
//! dropped: after its last byte was sent, or when the client went away.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use super::Pending;
use crate::upstream::{BoxError, ProxyBody};

pub struct Logged {
    inner: ProxyBody,
    sent: u64,
    /// The body said it ended (a chunked or close-delimited body never
    /// reports `is_end_stream` itself).
    ended: bool,
    failed: bool,
    pending: Option<Pending>,
}

impl Logged {
    pub fn new(inner: ProxyBody, pending: Pending) -> Logged {
        Logged {
            inner,
            sent: 0,
            ended: false,
            failed: false,
            pending: Some(pending),
        }
    }
}

impl Body for Logged {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    self.sent += data.len() as u64;
                }
            }
            Poll::Ready(Some(Err(_))) => self.failed = true,
            Poll::Ready(None) => self.ended = true,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for Logged {
    fn drop(&mut self) {
        if let Some(pending) = self.pending.take() {
            let ended = self.ended || self.inner.is_end_stream();
            pending.finish(self.sent, ended && !self.failed);
        }
    }
}
