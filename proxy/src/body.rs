//! Body helpers: small synthetic bodies and JSON answers, buffering a
//! response up to a limit for storage without losing what was read when it
//! turns out larger, and an idle limit on streamed bodies.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, SizeHint};

use crate::upstream::{BoxError, ProxyBody};

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|e| match e {}).boxed()
}

pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|e| match e {}).boxed()
}

/// A JSON answer the proxy makes itself (its errors, the admin endpoints).
pub fn json_response(status: http::StatusCode, value: &serde_json::Value) -> http::Response<ProxyBody> {
    let mut response = http::Response::new(full(Bytes::from(value.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}

/// What [`buffer_up_to`] found.
pub enum Buffered<B> {
    /// The whole body, at most `limit` bytes.
    Complete(Bytes),
    /// Larger than `limit`: what was read, then the unread rest. Streamed
    /// to the client, never stored.
    TooLarge(Prefixed<B>),
}

/// Reads `body` whole if it is at most `limit` bytes.
pub async fn buffer_up_to<B>(mut body: B, limit: u64) -> Result<Buffered<B>, BoxError>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut chunks: VecDeque<Bytes> = VecDeque::new();
    let mut size: u64 = 0;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Into::into)?;
        // Trailers are dropped: JSON APIs do not use them, and stored
        // entries have no place for them.
        let Ok(data) = frame.into_data() else { continue };
        size += data.len() as u64;
        chunks.push_back(data);
        if size > limit {
            return Ok(Buffered::TooLarge(Prefixed {
                prefix: chunks,
                rest: body,
            }));
        }
    }
    Ok(Buffered::Complete(match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop_front().expect("one chunk"),
        _ => {
            let mut joined = BytesMut::with_capacity(size as usize);
            for chunk in chunks {
                joined.extend_from_slice(&chunk);
            }
            joined.freeze()
        }
    }))
}

/// Already-read chunks followed by the rest of a body.
pub struct Prefixed<B> {
    prefix: VecDeque<Bytes>,
    rest: B,
}

impl<B> Body for Prefixed<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.prefix.pop_front() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        Pin::new(&mut self.rest).poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_empty() && self.rest.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let buffered: u64 = self.prefix.iter().map(|c| c.len() as u64).sum();
        let rest = self.rest.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(rest.lower() + buffered);
        if let Some(upper) = rest.upper() {
            hint.set_upper(upper + buffered);
        }
        hint
    }
}

/// A body that fails if `idle` passes without a frame: an upstream that
/// stops sending mid-body must not hold a client connection forever, nor a
/// client that stops sending its request body a connection and a buffer.
pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            idle,
            timer: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

/// Nothing arrived for the idle limit in the middle of a body.
#[derive(Debug, thiserror::Error)]
#[error("body stalled for {0:?}")]
pub struct BodyStalled(Duration);

/// Why a client's request body could not be read whole.
#[derive(Debug, thiserror::Error)]
pub enum RequestBodyError {
    #[error("request body larger than {0} bytes")]
    TooLarge(u64),
    #[error("request body stalled")]
    Stalled,
    /// Bad chunked framing, a reset stream, a connection closed early.
    #[error("request body broken: {0}")]
    Broken(String),
}

/// Reads a client's request body whole, at most `limit` bytes, failing if
/// it pauses for `idle`. Writes are buffered before anything is sent
/// upstream (as nginx's `proxy_request_buffering` does by default): a
/// backend never sees a truncated body that looks complete, and a client's
/// broken body is the client's error, never a write that "may have reached
/// the backend".
pub async fn read_request_body<B>(body: B, limit: u64, idle: Duration) -> Result<Bytes, RequestBodyError>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    match buffer_up_to(IdleTimeout::new(Box::pin(body), idle), limit).await {
        Ok(Buffered::Complete(bytes)) => Ok(bytes),
        Ok(Buffered::TooLarge(_)) => Err(RequestBodyError::TooLarge(limit)),
        Err(err) if err.is::<BodyStalled>() => Err(RequestBodyError::Stalled),
        Err(err) => Err(RequestBodyError::Broken(err.to_string())),
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let deadline = tokio::time::Instant::now() + this.idle;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(BodyStalled(this.idle))))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::stream;
    use http_body_util::StreamBody;

    fn chunked(parts: &[&'static [u8]]) -> impl Body<Data = Bytes, Error = BoxError> + Unpin {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> =
            parts.iter().map(|p| Ok(Frame::data(Bytes::from_static(p)))).collect();
        StreamBody::new(stream::iter(frames))
    }

    #[tokio::test]
    async fn small_bodies_are_buffered_whole() {
        let Buffered::Complete(bytes) = buffer_up_to(chunked(&[b"ab", b"cd"]), 4).await.unwrap() else {
            panic!("expected complete")
        };
        assert_eq!(&bytes[..], b"abcd");
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_fails_after_the_idle_limit() {
        let stalled = StreamBody::new(stream::pending::<Result<Frame<Bytes>, BoxError>>());
        let err = IdleTimeout::new(stalled, Duration::from_secs(5))
            .collect()
            .await
            .expect_err("must fail");
        assert!(err.to_string().contains("stalled"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_flowing_body_is_untouched() {
        let body = IdleTimeout::new(chunked(&[b"ab", b"cd"]), Duration::from_secs(5));
        assert_eq!(&body.collect().await.unwrap().to_bytes()[..], b"abcd");
    }

    #[tokio::test(start_paused = true)]
    async fn request_bodies_are_read_whole_or_refused_with_the_reason() {
        let read = |body| read_request_body(body, 4, Duration::from_secs(5));
        assert_eq!(&read(chunked(&[b"ab", b"cd"])).await.unwrap()[..], b"abcd");
        assert!(matches!(
            read(chunked(&[b"abc", b"de"])).await,
            Err(RequestBodyError::TooLarge(4))
        ));
        let broken: Vec<Result<Frame<Bytes>, BoxError>> =
            vec![Ok(Frame::data(Bytes::from_static(b"a"))), Err("bad chunk size".into())];
        assert!(matches!(
            read_request_body(StreamBody::new(stream::iter(broken)), 4, Duration::from_secs(5)).await,
            Err(RequestBodyError::Broken(_))
        ));
        let stalled = StreamBody::new(stream::pending::<Result<Frame<Bytes>, BoxError>>());
        assert!(matches!(
            read_request_body(stalled, 4, Duration::from_secs(5)).await,
            Err(RequestBodyError::Stalled)
        ));
    }

    #[tokio::test]
    async fn large_bodies_lose_nothing() {
        let Buffered::TooLarge(rest) = buffer_up_to(chunked(&[b"ab", b"cd", b"ef"]), 3).await.unwrap() else {
            panic!("expected too large")
        };
        let all = rest.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"abcdef");
    }
}
