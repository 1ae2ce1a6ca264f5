//! The client's request body on its way upstream, watched: when the client
//! sends a malformed body, cuts it short or stalls, the exchange fails on
//! the upstream side, but the fault is the client's. The watch tells the
//! two apart, so a bad client gets a 400 or 408 and never counts against a
//! healthy backend.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// What became of the client's body; shared with the proxy.
#[derive(Debug, Default)]
pub struct UploadWatch {
    finished: AtomicBool,
    /// The last poll of the body found no data from the client yet.
    waiting_on_client: AtomicBool,
    failure: Mutex<Option<String>>,
}

impl UploadWatch {
    /// Whether the upload is what holds the exchange up: the upstream asked
    /// for more of the body and the client has not sent it. (An upstream
    /// that is slow to read, or a body never asked for, is not the
    /// client's doing.)
    pub fn stalled_by_client(&self) -> bool {
        !self.finished.load(Ordering::Acquire) && self.waiting_on_client.load(Ordering::Acquire)
    }

    /// Why the body could not be read, in plain words, if it could not.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().clone()
    }
}

/// The client's body, streamed as it arrives, reporting to its watch.
pub struct ClientUpload {
    inner: Incoming,
    watch: Arc<UploadWatch>,
}

impl ClientUpload {
    pub fn new(inner: Incoming) -> (Self, Arc<UploadWatch>) {
        let watch = Arc::new(UploadWatch::default());
        if inner.is_end_stream() {
            watch.finished.store(true, Ordering::Release);
        }
        let upload = ClientUpload {
            inner,
            watch: Arc::clone(&watch),
        };
        (upload, watch)
    }
}

impl Body for ClientUpload {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        let watch = &this.watch;
        watch.waiting_on_client.store(polled.is_pending(), Ordering::Release);
        match &polled {
            // hyper's client stops polling once the announced length has
            // arrived: the end of the stream is seen here, not by a `None`.
            Poll::Ready(None) => watch.finished.store(true, Ordering::Release),
            Poll::Ready(Some(Ok(_))) if this.inner.is_end_stream() => watch.finished.store(true, Ordering::Release),
            Poll::Ready(Some(Err(error))) => {
                *watch.failure.lock() = Some(plain_words(error));
            }
            _ => {}
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

/// What a client's body error means, without hyper's error chain. The
/// body decoder reports a framing error as an `InvalidInput`/`InvalidData`
/// I/O error ("Invalid chunk size line: …"), a body cut short as
/// `UnexpectedEof`.
fn plain_words(error: &hyper::Error) -> String {
    let io_kind = std::error::Error::source(error)
        .and_then(|cause| cause.downcast_ref::<std::io::Error>())
        .map(std::io::Error::kind);
    let framing = matches!(
        io_kind,
        Some(std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData)
    );
    if error.is_incomplete_message() || io_kind == Some(std::io::ErrorKind::UnexpectedEof) {
        "the request body ended before it was complete (shorter than its Content-Length, or without its last chunk)"
            .to_owned()
    } else if framing || error.is_parse() {
        "the request body's chunked encoding is malformed".to_owned()
    } else if error.is_timeout() {
        "the request body stopped arriving".to_owned()
    } else {
        "the request body could not be read".to_owned()
    }
}
