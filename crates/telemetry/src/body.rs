//! A body passed on frame by frame, unchanged, while something watches it:
//! the listener keeps a request counted in flight until its response body
//! is gone, the router's pool takes a connection back when the upstream's
//! body has been read to its end, the router's upload watch records how a
//! client's body ended. One wrapper, so the `Body` plumbing is written once
//! and each watcher says only what it does with an event.

use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Frame, SizeHint};

/// What one poll of the inner body gave.
pub enum BodyEvent<'a, E> {
    /// No frame yet; the body will be polled again.
    Waiting,
    /// A frame, and more may follow.
    Frame,
    /// The last frame was read (with it or after it). Seen again if the
    /// body is polled again after its end.
    End,
    /// The body failed; nothing follows.
    Failed(&'a E),
}

/// Told the outcome of every poll of a [`WatchedBody`].
pub trait BodyWatcher<E> {
    fn observe(&mut self, event: BodyEvent<'_, E>);
}

pin_project_lite::pin_project! {
    /// `inner`, frame for frame, reporting each poll to `watcher`.
    pub struct WatchedBody<B, W> {
        #[pin]
        inner: B,
        watcher: W,
    }
}

impl<B, W> WatchedBody<B, W> {
    pub fn new(inner: B, watcher: W) -> Self {
        WatchedBody { inner, watcher }
    }

    #[cfg(test)]
    fn watcher_mut(&mut self) -> &mut W {
        &mut self.watcher
    }
}

impl<B: Body, W: BodyWatcher<B::Error>> Body for WatchedBody<B, W> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        let event = match &polled {
            Poll::Pending => BodyEvent::Waiting,
            Poll::Ready(None) => BodyEvent::End,
            // A body of announced length is not polled past its last frame
            // (hyper stops once the length has arrived): its end shows here.
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => BodyEvent::End,
            Poll::Ready(Some(Ok(_))) => BodyEvent::Frame,
            Poll::Ready(Some(Err(error))) => BodyEvent::Failed(error),
        };
        this.watcher.observe(event);
        polled
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
    use std::collections::VecDeque;

    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};

    use super::*;

    /// Records each event as a word.
    #[derive(Default)]
    struct Journal(Vec<&'static str>);

    impl<E> BodyWatcher<E> for Journal {
        fn observe(&mut self, event: BodyEvent<'_, E>) {
            self.0.push(match event {
                BodyEvent::Waiting => "waiting",
                BodyEvent::Frame => "frame",
                BodyEvent::End => "end",
                BodyEvent::Failed(_) => "failed",
            });
        }
    }

    /// A body of unknown length made of these frames; `None` is a poll
    /// that finds nothing yet.
    struct Frames(VecDeque<Option<Result<Frame<Bytes>, std::io::Error>>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = std::io::Error;

        fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
            match self.get_mut().0.pop_front() {
                Some(None) => {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
                Some(Some(frame)) => Poll::Ready(Some(frame)),
                None => Poll::Ready(None),
            }
        }
    }

    fn data(text: &'static str) -> Option<Result<Frame<Bytes>, std::io::Error>> {
        Some(Ok(Frame::data(Bytes::from_static(text.as_bytes()))))
    }

    async fn journal_of<B>(body: B) -> (Vec<&'static str>, Result<Vec<u8>, B::Error>)
    where
        B: Body<Data = Bytes> + Unpin,
    {
        let mut watched = WatchedBody::new(body, Journal::default());
        let mut collected = Vec::new();
        let result = loop {
            match watched.frame().await {
                Some(Ok(frame)) => collected.extend_from_slice(frame.data_ref().map_or(&[][..], |d| &d[..])),
                Some(Err(error)) => break Err(error),
                None => break Ok(collected),
            }
        };
        (std::mem::take(&mut watched.watcher_mut().0), result)
    }

    #[tokio::test]
    async fn a_body_of_known_length_ends_with_its_last_frame() {
        let (journal, body) = journal_of(Full::new(Bytes::from_static(b"abc"))).await;
        assert_eq!(body.ok(), Some(b"abc".to_vec()));
        // Full is at its end once its one frame is out; the poll after says so again.
        assert_eq!(journal, ["end", "end"]);
    }

    #[tokio::test]
    async fn a_streamed_body_reports_waits_frames_then_its_end_or_its_failure() {
        let frames = Frames(VecDeque::from([data("a"), None, data("b")]));
        let (journal, body) = journal_of(frames).await;
        assert_eq!(body.ok(), Some(b"ab".to_vec()));
        assert_eq!(journal, ["frame", "waiting", "frame", "end"]);

        let frames = Frames(VecDeque::from([
            data("a"),
            Some(Err(std::io::Error::other("cut short"))),
        ]));
        let (journal, body) = journal_of(frames).await;
        assert_eq!(body.err().map(|e| e.to_string()), Some("cut short".to_owned()));
        assert_eq!(journal, ["frame", "failed"]);
    }
}
