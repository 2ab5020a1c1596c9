//! Request bodies that must keep arriving: a client sending its body a
//! byte a minute would otherwise hold a replica's concurrency slot (and a
//! connection) until the response timeout, minutes later. As nginx's
//! `client_body_timeout`, the clock runs only while the body is being
//! read and waits for more: a handler that has not read yet loses nothing.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};

use berth_runtime::BoxError;

/// How long a request body may send nothing while it is being read.
pub const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

pub struct IdleTimeout<B> {
    inner: B,
    idle: Duration,
    /// Set while a read waits; gone once a frame arrives.
    waiting: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: Duration) -> IdleTimeout<B> {
        IdleTimeout {
            inner,
            idle,
            waiting: None,
        }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.waiting = None;
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let timer = this
                    .waiting
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                        "no part of the request body arrived for {}s",
                        idle.as_secs()
                    )
                    .into()))),
                    Poll::Pending => Poll::Pending,
                }
            }
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
    use http_body_util::BodyExt as _;

    /// A body whose sender sends when told, over a channel.
    fn channel() -> (
        tokio::sync::mpsc::Sender<Bytes>,
        impl Body<Data = Bytes, Error = std::io::Error> + Unpin,
    ) {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Bytes>(1);
        let frames = futures_util::stream::poll_fn(move |cx| {
            rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
        });
        (tx, http_body_util::StreamBody::new(Box::pin(frames)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_stops_arriving_fails_after_the_idle_time() {
        let (tx, body) = channel();
        let mut body = IdleTimeout::new(body, Duration::from_secs(60));
        // Bytes 50 s apart keep it going.
        for _ in 0..3 {
            tokio::time::advance(Duration::from_secs(50)).await;
            tx.send(Bytes::from_static(b"x")).await.unwrap();
            let frame = body.frame().await.unwrap().unwrap();
            assert_eq!(frame.into_data().unwrap(), "x");
        }
        // Then nothing for a minute: an error, not a wait for ever.
        let error = body.frame().await.unwrap().unwrap_err();
        assert!(error.to_string().contains("60s"), "{error}");
        drop(tx);
    }
}
