//! The client's request body on its way upstream, watched: when the client
//! sends a malformed body, cuts it short or stalls, the exchange fails on
//! the upstream side, but the fault is the client's. The watch tells the
//! two apart, so a bad client gets a 400 or 408 and never counts against a
//! healthy backend.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hyper::body::{Body, Incoming};
use parking_lot::Mutex;
use vigie_telemetry::body::{BodyEvent, BodyWatcher, WatchedBody};

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
pub type ClientUpload = WatchedBody<Incoming, Reporter>;

/// The body's side of the watch.
pub struct Reporter(Arc<UploadWatch>);

/// The client's body and the watch the proxy reads.
pub fn watched(inner: Incoming) -> (ClientUpload, Arc<UploadWatch>) {
    let watch = Arc::new(UploadWatch::default());
    if inner.is_end_stream() {
        watch.finished.store(true, Ordering::Release);
    }
    (WatchedBody::new(inner, Reporter(Arc::clone(&watch))), watch)
}

impl BodyWatcher<hyper::Error> for Reporter {
    fn observe(&mut self, event: BodyEvent<'_, hyper::Error>) {
        let watch = &self.0;
        watch
            .waiting_on_client
            .store(matches!(event, BodyEvent::Waiting), Ordering::Release);
        match event {
            BodyEvent::End => watch.finished.store(true, Ordering::Release),
            BodyEvent::Failed(error) => *watch.failure.lock() = Some(plain_words(error)),
            BodyEvent::Waiting | BodyEvent::Frame => {}
        }
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
