//! The proxy's common case on a plain HTTP/1.1 connection: a request
//! without a body, written as one buffer, and its response read by the task
//! that proxies it. hyper's client runs each connection in a task of its
//! own and hands every request and response across channels; for a request
//! with nothing to stream upstream, that hand-off costs more than the HTTP
//! (bench/instructions.sh: 33,306 instructions per proxied GET through
//! hyper's client, 28,196 this way, 24,053 after the fixes that followed;
//! docs/benchmarks.md). Requests with a body keep hyper's client
//! ([`crate::pool`]), which streams them.
//!
//! The response head is parsed by `httparse` (hyper's own parser); header
//! values are slices of the read buffer, not copies. The body is framed by
//! `Content-Length`, chunked transfer coding or the end of the connection,
//! and nothing for `HEAD`, 1xx, 204 and 304 (RFC 9112 §6.3). A connection
//! goes back to its pool only after a complete, delimited body.

use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes, BytesMut};
use http::header::{CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, DATE, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use crate::headers::X_REQUEST_ID;

/// The longest response head read; a longer one is refused.
const MAX_HEAD_BYTES: usize = 64 * 1024;
/// The most header fields a response head may have.
const MAX_HEADERS: usize = 100;
/// The longest chunk-size or trailer line.
const MAX_LINE_BYTES: usize = 4 * 1024;
/// Bytes read from the socket at a time.
const READ_CHUNK: usize = 16 * 1024;
/// Below this much room, a read gets a new chunk first.
const MIN_READ_ROOM: usize = 8 * 1024;

/// Why an exchange failed before its response head was read.
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Writing the request or reading the response failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The connection closed before any byte of a response.
    #[error("the connection closed before a response")]
    Closed,
    /// The connection closed in the middle of the response head.
    #[error("the connection closed in the middle of the response head")]
    Incomplete,
    /// The response is not valid HTTP/1.1.
    #[error("{0}")]
    Invalid(&'static str),
    /// The deadline passed before the response head was read.
    #[error("no response head before the deadline")]
    TimedOut,
}

impl ExchangeError {
    /// Nothing of a response came back: a kept-alive connection the
    /// upstream had closed, on which the request may be sent again.
    pub fn nothing_received(&self) -> bool {
        match self {
            ExchangeError::Closed => true,
            ExchangeError::Io(e) => matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted
            ),
            ExchangeError::Incomplete | ExchangeError::Invalid(_) | ExchangeError::TimedOut => false,
        }
    }
}

/// A connection with its read buffer.
pub struct Connection {
    stream: TcpStream,
    buf: BytesMut,
    /// The deadline of its exchanges: one timer for the connection's life,
    /// moved later for each request, which costs an atomic update where a
    /// timer per request was put in and taken out of the runtime's timer
    /// wheel (bench/callgrind.sh, docs/benchmarks.md). `None` before the
    /// first exchange and while one holds it. Between exchanges it keeps
    /// the waker of the last task that used it; if it comes due then, that
    /// task is woken once for nothing.
    timer: Option<Pin<Box<Sleep>>>,
}

impl Connection {
    pub fn new(stream: TcpStream) -> Self {
        Connection {
            stream,
            buf: BytesMut::new(),
            timer: None,
        }
    }

    /// Whether a pooled connection is still quiet: nothing has come since
    /// its last response (a stray answer would be taken for the next
    /// request's), and the upstream has not closed it. Free when the
    /// runtime has seen no event on it since a read drained it (see
    /// [`read_draining`]); otherwise costs one read that finds nothing.
    ///
    /// "Seen" is the trade, the one nginx makes for its kept-alive
    /// connections: bytes that reach the socket after the thread last
    /// collected its events (at most one batch of tasks ago) are not
    /// noticed here. Asking the kernel every time instead cost 3% more CPU
    /// per request (docs/benchmarks.md).
    pub fn still_idle(&self) -> bool {
        if self.stream.try_io(Interest::READABLE, || Ok(())).is_err() {
            return true;
        }
        let mut byte = [0u8; 1];
        matches!(self.stream.try_read(&mut byte), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }

    /// Room to read into: a new [`READ_CHUNK`] only when little is left.
    /// (Reserving a full chunk each time allocated once per response: the
    /// header values of the last one still share the buffer, so its space
    /// cannot be reclaimed.)
    fn make_room(&mut self) {
        if self.buf.capacity() - self.buf.len() < MIN_READ_ROOM {
            self.buf.reserve(READ_CHUNK);
        }
    }

    /// Waits for more bytes; `Ok(false)` at the end of the stream.
    async fn read_more(&mut self) -> io::Result<bool> {
        self.make_room();
        loop {
            self.stream.readable().await?;
            match read_draining(&self.stream, &mut self.buf) {
                Ok(n) => return Ok(n > 0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }

    fn poll_read_more(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<bool>> {
        self.make_room();
        loop {
            std::task::ready!(self.stream.poll_read_ready(cx))?;
            match read_draining(&self.stream, &mut self.buf) {
                Ok(n) => return Poll::Ready(Ok(n > 0)),
                // Readiness is cleared: the next poll registers the waker.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

/// Reads what `stream` holds into `buf`'s spare room. A read that leaves
/// room unused has emptied the socket (nginx reasons the same way): the
/// stream's readiness is then cleared as a read that found nothing would
/// clear it, which saves that read, and [`Connection::still_idle`]'s. The
/// runtime clears it only if no event came since the read began, so data or
/// a close that arrives later is seen at the thread's next collection of
/// events (not before: see [`Connection::still_idle`]).
fn read_draining(stream: &TcpStream, buf: &mut BytesMut) -> io::Result<usize> {
    let room = buf.capacity() - buf.len();
    let mut read = 0;
    let result = stream.try_io(Interest::READABLE, || {
        read = stream.try_read_buf(buf)?;
        if read > 0 && read < room {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(read)
    });
    match result {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && read > 0 => Ok(read),
        other => other,
    }
}

/// A request head as it goes on the wire: `method target HTTP/1.1`, the
/// fields, the `extra` fields, an empty line.
pub fn encode_head<'a>(
    method: &Method,
    target: &str,
    headers: &HeaderMap,
    extra: impl Iterator<Item = (HeaderName, &'a HeaderValue)> + Clone,
) -> Vec<u8> {
    let size = |name: &HeaderName, value: &HeaderValue| name.as_str().len() + value.len() + 4;
    let fields: usize =
        headers.iter().map(|(n, v)| size(n, v)).sum::<usize>() + extra.clone().map(|(n, v)| size(&n, v)).sum::<usize>();
    let mut head = Vec::with_capacity(method.as_str().len() + target.len() + fields + 16);
    head.extend_from_slice(method.as_str().as_bytes());
    head.push(b' ');
    head.extend_from_slice(target.as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    let mut field = |name: &HeaderName, value: &HeaderValue| {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    };
    for (name, value) in headers {
        field(name, value);
    }
    for (name, value) in extra {
        field(&name, value);
    }
    head.extend_from_slice(b"\r\n");
    head
}

/// The bytes of a head not all arrived, back in a buffer to read more into.
/// They are copied (the buffer's spare room shares their allocation); a
/// head split across reads is rare, and parsing it again costs more.
fn restore(filled: Bytes) -> BytesMut {
    filled
        .try_into_mut()
        .unwrap_or_else(|shared| BytesMut::from(&shared[..]))
}

/// A parsed response head.
pub struct Head {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    framing: Framing,
    keep_alive: bool,
}

/// Writes `head` and reads the response head (interim 1xx answers
/// skipped), giving up at `deadline`. The body, if any, is read through
/// [`ResponseBody`].
pub async fn exchange(
    mut connection: Connection,
    head: &[u8],
    method: &Method,
    deadline: Instant,
) -> Result<(Head, Connection), ExchangeError> {
    let mut timer = match connection.timer.take() {
        Some(mut timer) => {
            // Usually later than the last exchange's deadline: the timer then
            // stays where it is in the wheel, and is moved only if it comes
            // due first. An earlier one (a health check's shorter timeout),
            // or a timer that already fired while the connection was idle,
            // is registered again.
            timer.as_mut().reset(deadline);
            timer
        }
        None => Box::pin(tokio::time::sleep_until(deadline)),
    };
    let head = {
        let work = std::pin::pin!(exchange_head(&mut connection, head, method));
        before(timer.as_mut(), work).await
    };
    connection.timer = Some(timer);
    head.map(|head| (head, connection))
}

/// `work`'s result, or [`ExchangeError::TimedOut`] if `timer` fires first.
async fn before<T>(
    mut timer: Pin<&mut Sleep>,
    mut work: Pin<&mut impl Future<Output = Result<T, ExchangeError>>>,
) -> Result<T, ExchangeError> {
    std::future::poll_fn(|cx| {
        let had_budget = tokio::task::coop::has_budget_remaining();
        if let Poll::Ready(result) = work.as_mut().poll(cx) {
            return Poll::Ready(result);
        }
        // As in tokio's own timeout: work that used up the task's budget
        // (an upstream flooding interim answers) must not keep the timer
        // from being looked at, or the request would never time out.
        let fired = if had_budget && !tokio::task::coop::has_budget_remaining() {
            std::pin::pin!(tokio::task::coop::unconstrained(timer.as_mut())).poll(cx)
        } else {
            timer.as_mut().poll(cx)
        };
        fired.map(|()| Err(ExchangeError::TimedOut))
    })
    .await
}

async fn exchange_head(connection: &mut Connection, head: &[u8], method: &Method) -> Result<Head, ExchangeError> {
    connection.stream.write_all(head).await?;
    // Once part of an answer has come (an interim one included), a failure
    // is no longer "nothing received": the request must not be sent again.
    let mut interim_seen = false;
    loop {
        if let Some(parsed) = parse_head(&mut connection.buf, method)? {
            if parsed.status.is_informational() {
                interim_seen = true;
                continue;
            }
            return Ok(parsed);
        }
        let had_bytes = interim_seen || !connection.buf.is_empty();
        match connection.read_more().await {
            Ok(true) => {}
            Ok(false) if had_bytes => return Err(ExchangeError::Incomplete),
            Ok(false) => return Err(ExchangeError::Closed),
            Err(_) if had_bytes => return Err(ExchangeError::Incomplete),
            Err(e) => return Err(ExchangeError::Io(e)),
        }
    }
}

/// One response head off the front of `buf`, or `None` when more bytes
/// are needed.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, ExchangeError> {
    if buf.is_empty() {
        return Ok(None);
    }
    // Parsed from a frozen copy-free view of the bytes so that the header
    // values can be slices of it; the field array is left uninitialised
    // (zeroing it cost more than the parse).
    let filled = buf.split().freeze();
    let mut fields = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed =
        httparse::ParserConfig::default().parse_response_with_uninit_headers(&mut response, &filled, &mut fields);
    let length = match parsed {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) if filled.len() > MAX_HEAD_BYTES => {
            return Err(ExchangeError::Invalid("a response head over 64 KiB"))
        }
        Ok(httparse::Status::Partial) => {
            *buf = restore(filled);
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ExchangeError::Invalid("a response head with over 100 fields"))
        }
        Err(_) => return Err(ExchangeError::Invalid("a response that is not valid HTTP")),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(ExchangeError::Invalid("a response with an invalid status"))?;
    let version = match response.version {
        Some(1) => Version::HTTP_11,
        _ => Version::HTTP_10,
    };
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err(ExchangeError::Invalid(
            "a protocol switch, which the router does not proxy",
        ));
    }
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    // The fields that frame the body, noted on the way (no lookups after).
    let mut fields = FramingFields::default();
    for field in response.headers.iter() {
        let name = field_name(field.name.as_bytes())
            .map_err(|_| ExchangeError::Invalid("a response with an invalid header name"))?;
        let value = HeaderValue::from_maybe_shared(filled.slice_ref(field.value))
            .map_err(|_| ExchangeError::Invalid("a response with an invalid header value"))?;
        fields.note(&name, &value)?;
        headers.append(name, value);
    }
    // What came after the head (the body's start) stays for the body.
    buf.extend_from_slice(&filled[length..]);
    let mut framing = fields.framing(method, status);
    let both_framings = fields.transfer_coding.is_some() && fields.content_length.is_some();
    if both_framings {
        // The transfer coding frames the body; a length beside it is wrong
        // (RFC 9112 §6.3), must not reach the client, and the connection
        // is not trusted with another request.
        headers.remove(CONTENT_LENGTH);
    }
    if version == Version::HTTP_10 && fields.transfer_coding.is_some() && framing != Framing::Empty {
        // HTTP/1.0 has no transfer codings (RFC 9112 §6.1): read to the end.
        framing = Framing::UntilClose;
    }
    let keep_alive =
        version == Version::HTTP_11 && !matches!(framing, Framing::UntilClose) && !fields.close && !both_framings;
    Ok(Some(Head {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

/// A field's name. The fields nearly every answer of our backends
/// carries, as they spell them, are matched whole: that skips the parser's
/// lookup of each byte (bench/callgrind.sh). `x-request-id` is not a name `http` knows:
/// parsed, it would be copied into an allocation of its own.
fn field_name(raw: &[u8]) -> Result<HeaderName, http::header::InvalidHeaderName> {
    match raw {
        b"content-type" => return Ok(CONTENT_TYPE),
        b"content-length" => return Ok(CONTENT_LENGTH),
        b"date" => return Ok(DATE),
        _ => {}
    }
    if raw.eq_ignore_ascii_case(X_REQUEST_ID.as_str().as_bytes()) {
        return Ok(X_REQUEST_ID);
    }
    HeaderName::from_bytes(raw)
}

/// How the body of a response ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body, whatever the fields say.
    Empty,
    /// This many bytes left.
    Length(u64),
    Chunked(Chunk),
    /// Until the upstream closes the connection.
    UntilClose,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// In a chunk's data, this many bytes left.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// At the trailer section (ignored) after the last chunk.
    Trailers,
}

/// The fields of a response head that say how its body ends.
#[derive(Default)]
struct FramingFields {
    /// The last transfer coding named.
    transfer_coding: Option<HeaderValue>,
    content_length: Option<u64>,
    /// `Connection: close`.
    close: bool,
}

impl FramingFields {
    fn note(&mut self, name: &HeaderName, value: &HeaderValue) -> Result<(), ExchangeError> {
        if name == TRANSFER_ENCODING {
            self.transfer_coding = Some(value.clone());
        } else if name == CONTENT_LENGTH {
            let length = parse_length(value)?;
            if self.content_length.is_some_and(|first| first != length) {
                return Err(ExchangeError::Invalid(
                    "a response with conflicting Content-Length fields",
                ));
            }
            self.content_length = Some(length);
        } else if name == CONNECTION {
            let close = value
                .to_str()
                .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("close")));
            self.close |= close;
        }
        Ok(())
    }

    fn framing(&self, method: &Method, status: StatusCode) -> Framing {
        if method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED
        {
            return Framing::Empty;
        }
        if let Some(codings) = &self.transfer_coding {
            let last = codings.to_str().ok().and_then(|c| c.rsplit(',').next()).map(str::trim);
            return match last {
                Some(coding) if coding.eq_ignore_ascii_case("chunked") => Framing::Chunked(Chunk::Size),
                _ => Framing::UntilClose,
            };
        }
        match self.content_length {
            None => Framing::UntilClose,
            Some(0) => Framing::Empty,
            Some(length) => Framing::Length(length),
        }
    }
}

fn parse_length(value: &HeaderValue) -> Result<u64, ExchangeError> {
    let text = value.to_str().unwrap_or_default().trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(ExchangeError::Invalid("a response with an invalid Content-Length"));
    }
    text.parse()
        .map_err(|_| ExchangeError::Invalid("a response with an invalid Content-Length"))
}

/// Given back when a response body has been read to its end on a
/// connection that can carry another request.
pub trait Reuse: Send + Sync {
    fn give_back(&self, connection: Connection);
}

/// A response body read from its connection as the client takes it.
pub struct ResponseBody {
    connection: Option<Connection>,
    framing: Framing,
    keep_alive: bool,
    pool: Arc<dyn Reuse>,
}

impl ResponseBody {
    pub fn new(head: &Head, connection: Connection, pool: Arc<dyn Reuse>) -> Self {
        let mut body = ResponseBody {
            connection: Some(connection),
            framing: head.framing,
            keep_alive: head.keep_alive,
            pool,
        };
        if body.framing == Framing::Empty {
            body.finish();
        }
        body
    }

    /// The end of the body: the connection goes back to the pool when
    /// nothing else came after the body.
    fn finish(&mut self) {
        self.framing = Framing::Empty;
        if let Some(connection) = self.connection.take() {
            if self.keep_alive && connection.buf.is_empty() {
                self.pool.give_back(connection);
            }
        }
    }

    /// The next data frame in the buffer, `Ok(None)` when more bytes are
    /// needed. The body's end is `self.framing == Framing::Empty`.
    fn next_frame(&mut self) -> Result<Option<Bytes>, io::Error> {
        let Some(connection) = self.connection.as_mut() else {
            return Ok(None);
        };
        let buf = &mut connection.buf;
        loop {
            match self.framing {
                Framing::Empty => return Ok(None),
                Framing::UntilClose => return Ok((!buf.is_empty()).then(|| buf.split().freeze())),
                Framing::Length(left) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.framing = Framing::Length(left);
                    if left == 0 {
                        self.finish();
                    }
                    return Ok(Some(data));
                }
                Framing::Chunked(Chunk::Size) => {
                    let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                        if buf.len() > MAX_LINE_BYTES {
                            return Err(invalid("a chunk-size line over 4 KiB"));
                        }
                        return Ok(None);
                    };
                    // httparse takes a line without digits for size 0 and a
                    // bare LF in an extension; both are malformed (RFC 9112 §7.1).
                    let line = &buf[..end];
                    if !line.first().is_some_and(u8::is_ascii_hexdigit)
                        || line.iter().any(|b| matches!(b, b'\r' | b'\n'))
                    {
                        return Err(invalid("an invalid chunk-size line"));
                    }
                    let size = match httparse::parse_chunk_size(&buf[..end + 2]) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            buf.advance(used);
                            size
                        }
                        _ => return Err(invalid("an invalid chunk-size line")),
                    };
                    self.framing = Framing::Chunked(if size == 0 { Chunk::Trailers } else { Chunk::Data(size) });
                }
                Framing::Chunked(Chunk::Data(left)) => {
                    if buf.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(buf.len());
                    let data = buf.split_to(take).freeze();
                    let left = left - take as u64;
                    self.framing = Framing::Chunked(if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) });
                    return Ok(Some(data));
                }
                Framing::Chunked(Chunk::DataEnd) => {
                    if buf.len() < 2 {
                        return Ok(None);
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(invalid("a chunk not followed by a line end"));
                    }
                    buf.advance(2);
                    self.framing = Framing::Chunked(Chunk::Size);
                }
                Framing::Chunked(Chunk::Trailers) => {
                    let Some(line) = take_line(buf)? else { return Ok(None) };
                    if line.is_empty() {
                        self.finish();
                        return Ok(None);
                    }
                }
            }
        }
    }
}

fn invalid(what: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A line (without its CRLF) off the front of `buf`, or `None` when it has
/// not all arrived.
fn take_line(buf: &mut BytesMut) -> io::Result<Option<BytesMut>> {
    match buf.windows(2).position(|w| w == b"\r\n") {
        Some(end) => {
            let line = buf.split_to(end);
            buf.advance(2);
            Ok(Some(line))
        }
        None if buf.len() > MAX_LINE_BYTES => Err(invalid("a trailer line over 4 KiB")),
        None => Ok(None),
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = self.get_mut();
        loop {
            match this.next_frame() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if this.framing == Framing::Empty => return Poll::Ready(None),
                Ok(None) => {}
                Err(e) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(connection) = this.connection.as_mut() else {
                return Poll::Ready(None);
            };
            match std::task::ready!(connection.poll_read_more(cx)) {
                Ok(true) => {}
                Ok(false) if this.framing == Framing::UntilClose => {
                    this.connection = None;
                    this.framing = Framing::Empty;
                    return Poll::Ready(None);
                }
                Ok(false) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upstream closed the connection before the end of its response body",
                    ))));
                }
                Err(e) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.framing == Framing::Empty
    }

    fn size_hint(&self) -> SizeHint {
        match self.framing {
            Framing::Empty => SizeHint::with_exact(0),
            Framing::Length(left) => SizeHint::with_exact(left),
            _ => SizeHint::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use http_body_util::BodyExt;
    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// Counts the connections given back.
    #[derive(Default)]
    struct Returned(AtomicUsize);

    impl Reuse for Returned {
        fn give_back(&self, _connection: Connection) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A server that reads one request head, then writes `pieces` with a
    /// pause between them, then closes the connection or, with `hold`,
    /// keeps it open.
    async fn upstream(pieces: Vec<&'static [u8]>, hold: bool) -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut head = Vec::new();
            while !head.ends_with(b"\r\n\r\n") {
                let mut byte = [0u8; 1];
                if stream.read(&mut byte).await.expect("read") == 0 {
                    return;
                }
                head.push(byte[0]);
            }
            for piece in pieces {
                stream.write_all(piece).await.expect("write");
                stream.flush().await.expect("flush");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            if hold {
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
        Connection::new(TcpStream::connect(addr).await.expect("connect"))
    }

    /// GET (or `method`) through a fresh connection to a server answering
    /// `pieces`: the head, the body or its error, and connections given back.
    async fn fetch(
        method: Method,
        pieces: Vec<&'static [u8]>,
        hold: bool,
    ) -> Result<(Head, Result<Vec<u8>, String>, usize), ExchangeError> {
        let connection = upstream(pieces, hold).await;
        let head_bytes = encode_head(&method, "/", &HeaderMap::new(), std::iter::empty());
        let deadline = Instant::now() + Duration::from_secs(3);
        let (head, connection) = exchange(connection, &head_bytes, &method, deadline).await?;
        let returned = Arc::new(Returned::default());
        let body = ResponseBody::new(&head, connection, Arc::clone(&returned) as Arc<dyn Reuse>);
        let body = tokio::time::timeout(Duration::from_secs(3), body.collect())
            .await
            .expect("the body ends")
            .map(|b| b.to_bytes().to_vec())
            .map_err(|e| e.to_string());
        Ok((head, body, returned.0.load(Ordering::SeqCst)))
    }

    #[test]
    fn a_request_head_is_the_method_target_and_fields() {
        let mut headers = HeaderMap::new();
        headers.insert("host", HeaderValue::from_static("blue:3000"));
        headers.insert("x-request-id", HeaderValue::from_static("abc"));
        let head = encode_head(&Method::GET, "/api/info?x=1", &headers, std::iter::empty());
        assert_eq!(
            String::from_utf8(head).expect("ascii"),
            "GET /api/info?x=1 HTTP/1.1\r\nhost: blue:3000\r\nx-request-id: abc\r\n\r\n"
        );
        // Extra fields follow the map's, and are counted in the capacity.
        let proto = HeaderValue::from_static("http");
        let extra = [(HeaderName::from_static("x-forwarded-proto"), &proto)];
        let head = encode_head(&Method::HEAD, "/", &headers, extra.into_iter());
        assert!(head.capacity() <= head.len() + 16, "one allocation, sized up front");
        assert_eq!(
            String::from_utf8(head).expect("ascii"),
            "HEAD / HTTP/1.1\r\nhost: blue:3000\r\nx-request-id: abc\r\nx-forwarded-proto: http\r\n\r\n"
        );
    }

    #[tokio::test]
    async fn a_body_of_known_length_arriving_in_pieces_ends_and_gives_the_connection_back() {
        let (head, body, returned) = fetch(
            Method::GET,
            vec![
                b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Color: bl",
                b"ue\r\n\r\nhello",
                b" world",
            ],
            true,
        )
        .await
        .expect("a response");
        assert_eq!((head.status, head.version), (StatusCode::OK, Version::HTTP_11));
        assert_eq!(head.headers["x-color"], "blue");
        assert_eq!(body.as_deref(), Ok(&b"hello world"[..]));
        assert_eq!(returned, 1);
    }

    #[tokio::test]
    async fn a_chunked_body_is_decoded_across_pieces_with_extensions_and_trailers() {
        let (head, body, returned) = fetch(
            Method::GET,
            vec![
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
                b"lo\r\n6;ext=1\r\n world\r",
                b"\n0\r\nX-Trailer: t\r\n",
                b"\r\n",
            ],
            true,
        )
        .await
        .expect("a response");
        assert_eq!(head.status, StatusCode::OK);
        assert_eq!(body.as_deref(), Ok(&b"hello world"[..]));
        assert_eq!(returned, 1);
    }

    #[tokio::test]
    async fn interim_answers_are_skipped_and_head_204_and_304_have_no_body() {
        let (head, body, returned) = fetch(
            Method::GET,
            vec![b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"],
            true,
        )
        .await
        .expect("a response");
        assert_eq!((head.status, body.as_deref()), (StatusCode::NO_CONTENT, Ok(&b""[..])));
        assert_eq!(returned, 1);
        let (head, body, returned) = fetch(
            Method::HEAD,
            vec![b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"],
            true,
        )
        .await
        .expect("a response");
        assert_eq!((head.status, body.as_deref()), (StatusCode::OK, Ok(&b""[..])));
        assert_eq!(returned, 1);
    }

    #[tokio::test]
    async fn a_body_until_close_or_with_connection_close_is_read_whole_and_not_reused() {
        let (_, body, returned) = fetch(Method::GET, vec![b"HTTP/1.1 200 OK\r\n\r\nall of ", b"it"], false)
            .await
            .expect("a response");
        assert_eq!((body.as_deref(), returned), (Ok(&b"all of it"[..]), 0));
        let (_, body, returned) = fetch(
            Method::GET,
            vec![b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"],
            false,
        )
        .await
        .expect("a response");
        assert_eq!((body.as_deref(), returned), (Ok(&b"ok"[..]), 0));
        let (_, _, returned) = fetch(
            Method::GET,
            vec![b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"],
            true,
        )
        .await
        .expect("a response");
        assert_eq!(returned, 0, "HTTP/1.0 is not kept alive");
    }

    #[tokio::test]
    async fn a_body_cut_short_is_an_error_and_its_connection_is_dropped() {
        for pieces in [
            vec![&b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"[..]],
            vec![&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"[..]],
        ] {
            let (_, body, returned) = fetch(Method::GET, pieces, false).await.expect("a response");
            let error = body.expect_err("cut short");
            assert!(error.contains("before the end of its response body"), "{error}");
            assert_eq!(returned, 0);
        }
        let (_, body, returned) = fetch(
            Method::GET,
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"],
            true,
        )
        .await
        .expect("a response");
        assert_eq!((body, returned), (Err("an invalid chunk-size line".to_owned()), 0));
    }

    #[tokio::test]
    async fn a_chunk_size_line_without_digits_or_with_a_bare_line_feed_is_an_error() {
        for pieces in [
            vec![&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n;x\r\n\r\n"[..]],
            vec![&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\r\n"[..]],
            vec![&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;a\nb\r\nhello\r\n0\r\n\r\n"[..]],
        ] {
            let (_, body, returned) = fetch(Method::GET, pieces, true).await.expect("a response");
            assert_eq!((body, returned), (Err("an invalid chunk-size line".to_owned()), 0));
        }
    }

    #[tokio::test]
    async fn a_response_framed_twice_is_read_by_its_coding_and_its_connection_not_reused() {
        let (head, body, returned) = fetch(
            Method::GET,
            vec![b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n2\r\nhi\r\n0\r\n\r\n"],
            true,
        )
        .await
        .expect("a response");
        assert_eq!((body.as_deref(), returned), (Ok(&b"hi"[..]), 0));
        assert!(!head.headers.contains_key(CONTENT_LENGTH));
    }

    #[tokio::test]
    async fn a_close_after_an_interim_answer_is_not_nothing_received() {
        let error = fetch(Method::DELETE, vec![b"HTTP/1.1 100 Continue\r\n\r\n"], false)
            .await
            .err()
            .expect("an error");
        assert!(!error.nothing_received(), "{error}: the request must not go out again");
    }

    #[tokio::test]
    async fn what_is_not_a_response_head_is_named() {
        let cases: [(&[u8], &str); 6] = [
            (b"", "the connection closed before a response"),
            (
                b"HTTP/1.1 200 OK\r\nContent-",
                "the connection closed in the middle of the response head",
            ),
            (b"SSH-2.0-OpenSSH\r\n\r\n", "a response that is not valid HTTP"),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
                "a response with conflicting Content-Length fields",
            ),
            (
                b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
                "a response with an invalid Content-Length",
            ),
            (
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
                "a protocol switch, which the router does not proxy",
            ),
        ];
        for (answer, message) in cases {
            let error = fetch(Method::GET, vec![answer], false)
                .await
                .err()
                .map(|e| e.to_string());
            assert_eq!(error.as_deref(), Some(message), "{:?}", String::from_utf8_lossy(answer));
        }
        let closed = fetch(Method::GET, vec![], false).await.err().expect("an error");
        assert!(closed.nothing_received());
    }

    /// A server that answers the first `answers` request heads of one
    /// connection with an empty 200, then reads on and answers nothing.
    async fn answering(answers: usize) -> Connection {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.expect("accept");
            let mut received = Vec::new();
            let mut answered = 0;
            let mut chunk = [0u8; 1024];
            while let Ok(n @ 1..) = stream.read(&mut chunk).await {
                received.extend_from_slice(&chunk[..n]);
                while let Some(end) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    received.drain(..end + 4);
                    if answered < answers {
                        answered += 1;
                        stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                            .await
                            .expect("write");
                    }
                }
            }
        });
        Connection::new(TcpStream::connect(addr).await.expect("connect"))
    }

    async fn get_within(connection: Connection, time: Duration) -> Result<Connection, ExchangeError> {
        let head = encode_head(&Method::GET, "/", &HeaderMap::new(), std::iter::empty());
        let (head, connection) = exchange(connection, &head, &Method::GET, Instant::now() + time).await?;
        assert_eq!(head.status, StatusCode::OK);
        Ok(connection)
    }

    #[tokio::test]
    async fn no_response_head_by_the_deadline_is_a_timeout() {
        let connection = answering(0).await;
        let started = Instant::now();
        let error = tokio::time::timeout(
            Duration::from_secs(3),
            get_within(connection, Duration::from_millis(100)),
        )
        .await
        .expect("the exchange's own timer fired")
        .err()
        .expect("a timeout");
        assert!(matches!(error, ExchangeError::TimedOut), "{error}");
        assert!(
            !error.nothing_received(),
            "a request that may have been seen is not sent again"
        );
        assert!(
            started.elapsed() >= Duration::from_millis(100),
            "fired early: {:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn a_connection_s_timer_moves_with_each_exchange_and_still_fires() {
        let time = Duration::from_millis(200);
        let mut connection = answering(3).await;
        // Back to back: each exchange moves the deadline later.
        connection = get_within(connection, time).await.expect("first");
        tokio::time::sleep(Duration::from_millis(50)).await;
        connection = get_within(connection, time).await.expect("second");
        // Idle past the last deadline: the timer came due with nothing to
        // time out, and must not fail the next exchange.
        tokio::time::sleep(Duration::from_millis(400)).await;
        connection = get_within(connection, time)
            .await
            .expect("third, after the old deadline passed");
        // The server answers no more: the moved timer fires at the new deadline.
        let started = Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(3), get_within(connection, time))
            .await
            .expect("the exchange's own timer fired")
            .err()
            .expect("a timeout");
        assert!(matches!(error, ExchangeError::TimedOut), "{error}");
        assert!(started.elapsed() >= time, "fired early: {:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_read_that_leaves_room_makes_the_idle_check_free() {
        let connection = get_within(answering(1).await, Duration::from_secs(3))
            .await
            .expect("an answer");
        // The answer came in one read with room to spare: the socket's
        // readiness is cleared, so the check reads nothing from the kernel.
        let readable = connection.stream.try_io(Interest::READABLE, || Ok(())).is_ok();
        assert!(!readable, "readiness left set after the read that emptied the socket");
        assert!(connection.still_idle());
    }

    #[test]
    fn field_names_matched_whole_are_the_ones_the_parser_gives() {
        for raw in [
            "content-type",
            "content-length",
            "date",
            "x-request-id",
            "Content-Type",
            "DATE",
            "X-Request-Id",
            "x-other",
        ] {
            let parsed = HeaderName::from_bytes(raw.as_bytes()).expect("a valid name");
            assert_eq!(field_name(raw.as_bytes()).expect("a valid name"), parsed, "{raw}");
        }
        assert!(field_name(b"bad name").is_err());
    }

    /// Work that never waits for anything, only uses up the task's budget
    /// and yields: what an upstream flooding interim answers looks like.
    async fn busy() -> Result<(), ExchangeError> {
        loop {
            tokio::task::consume_budget().await;
        }
    }

    #[tokio::test]
    async fn work_that_uses_up_the_budget_does_not_keep_the_timer_from_firing() {
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_millis(50)));
        let work = std::pin::pin!(busy());
        let result = tokio::time::timeout(Duration::from_secs(3), before(timer.as_mut(), work))
            .await
            .expect("the exchange's own timer fired");
        assert!(matches!(result, Err(ExchangeError::TimedOut)), "{result:?}");
    }
}
