//! The keep-alive connections to one upstream, reused last-in first-out:
//! plain connections for idempotent requests without a body (nearly every
//! proxied request: [`crate::h1`] writes and reads them in the request's own
//! task), and HTTP/1.1 connections of hyper's `client::conn::http1` for
//! requests that stream a body upstream.
//!
//! Why not hyper-util's pooling client: it spawns a task per request to
//! watch for the connection's return, hashes the pool key with SipHash on
//! every checkout and builds an absolute URI per request. Here a response
//! body gives its connection back itself when its last frame is read, in
//! the task that reads it, so a proxied request costs no extra task
//! (bench/instructions.sh: 45,000 instructions per request before, 37,800
//! after; docs/benchmarks.md).
//!
//! A connection is reused only within [`IDLE_TIMEOUT`] of its last
//! response, well inside the backend's keep-alive timeout (5 s), so the
//! backend closing an idle connection rarely races a request. When it does,
//! a request on a plain connection that got nothing back is sent again on
//! another one (it is idempotent and has no body), and a request hyper had
//! not begun to write is too.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::HOST;
use http::uri::Authority;
use http::{HeaderName, HeaderValue, Method, Request, Response};
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use parking_lot::{Mutex, MutexGuard};
use tokio::net::TcpStream;
use vigie_telemetry::body::{BodyEvent, BodyWatcher, WatchedBody};
use vigie_telemetry::lanes;

use crate::h1;

/// How long an idle connection may be reused after its last response.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2);
/// Idle connections kept per upstream, of each kind, on each lane (proxy
/// thread); more are closed once used.
pub const MAX_IDLE: usize = 256;

/// What the router sends upstream: the client's body, streamed, or nothing
/// (health checks).
pub type UpstreamBody = http_body_util::Either<crate::upload::ClientUpload, http_body_util::Empty<Bytes>>;

/// An empty upstream body.
pub fn empty_body() -> UpstreamBody {
    http_body_util::Either::Right(http_body_util::Empty::new())
}

/// A response body from either kind of connection.
pub type ResponseBody = http_body_util::Either<PooledBody, h1::ResponseBody>;

/// Whether a request may be sent twice with the same effect (RFC 9110 §9.2.2).
pub fn is_idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

/// Why a request got no response head.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be opened: nothing listens, or no answer in time.
    #[error("cannot connect: {0}")]
    Connect(std::io::Error),
    /// The connection failed while the request or its response head was
    /// on the way.
    #[error(transparent)]
    Http(#[from] hyper::Error),
    /// The same, on a plain connection.
    #[error(transparent)]
    Exchange(#[from] h1::ExchangeError),
    /// No response head within the time given to [`Pool::send`].
    #[error("no response within {} ms", .0.as_millis())]
    TimedOut(Duration),
}

struct Idle {
    sender: SendRequest<UpstreamBody>,
    since: Instant,
}

/// An idle plain connection and when it was given back.
type IdlePlain = (h1::Connection, Instant);

/// The connections to one upstream.
pub struct Pool {
    authority: Authority,
    /// `authority` as a Host header, for requests that came without one.
    host: HeaderValue,
    connect_timeout: Duration,
    /// Most recently used last; one list per lane, as `plain_idle`.
    idle: Box<[Mutex<VecDeque<Idle>>]>,
    /// The same for plain connections, one list per lane (index 0: any
    /// thread that is not a lane's): a connection is registered with the
    /// I/O driver of the runtime that opened it, and used on that runtime.
    plain_idle: Box<[Mutex<VecDeque<IdlePlain>>]>,
}

impl Pool {
    pub fn new(authority: Authority, connect_timeout: Duration) -> Self {
        let host = HeaderValue::from_str(authority.as_str()).unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Pool {
            authority,
            host,
            connect_timeout,
            idle: (0..=lanes::MAX_LANES).map(|_| Mutex::new(VecDeque::new())).collect(),
            plain_idle: (0..=lanes::MAX_LANES).map(|_| Mutex::new(VecDeque::new())).collect(),
        }
    }

    /// Sends `request` (origin-form URI), with the `extra` fields after its
    /// own, and waits for the response head, at most `timeout`
    /// ([`SendError::TimedOut`] then). Its body gives the connection back
    /// to the pool once read to the end.
    pub async fn send<'a>(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
        extra: impl Iterator<Item = (HeaderName, &'a HeaderValue)> + Clone,
        timeout: Duration,
    ) -> Result<Response<ResponseBody>, SendError> {
        if !request.headers().contains_key(HOST) {
            request.headers_mut().insert(HOST, self.host.clone());
        }
        if request.body().is_end_stream() && is_idempotent(request.method()) {
            let (parts, _nothing) = request.into_parts();
            let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
            let head = h1::encode_head(&parts.method, target, &parts.headers, extra);
            let response = self.send_plain(&head, &parts.method, timeout).await?;
            return Ok(response.map(http_body_util::Either::Right));
        }
        for (name, value) in extra {
            request.headers_mut().append(name, value.clone());
        }
        let response = tokio::time::timeout(timeout, Box::pin(self.send_streaming(request)))
            .await
            .map_err(|_| SendError::TimedOut(timeout))??;
        Ok(response.map(http_body_util::Either::Left))
    }

    /// A request without a body on a plain connection. One that got
    /// nothing back on a kept-alive connection (the upstream had closed
    /// it) goes out again on the next one, before the same deadline.
    async fn send_plain(
        self: &Arc<Self>,
        head: &[u8],
        method: &Method,
        timeout: Duration,
    ) -> Result<Response<h1::ResponseBody>, SendError> {
        let now = tokio::time::Instant::now();
        let deadline = now + timeout;
        // The clock read for the deadline serves the first checkout.
        let mut first_checkout = Some(now.into_std());
        loop {
            let now = first_checkout.take().unwrap_or_else(Instant::now);
            let (connection, reused) = match self.checkout_plain(now) {
                Some(connection) => (connection, true),
                None => {
                    let stream = tokio::time::timeout_at(deadline, Box::pin(self.open()))
                        .await
                        .map_err(|_| SendError::TimedOut(timeout))??;
                    (h1::Connection::new(stream), false)
                }
            };
            match h1::exchange(connection, head, method, deadline).await {
                Ok((head, connection)) => {
                    let body = h1::ResponseBody::new(&head, connection, Arc::clone(self) as Arc<dyn h1::Reuse>);
                    let mut response = Response::new(body);
                    *response.status_mut() = head.status;
                    *response.version_mut() = head.version;
                    *response.headers_mut() = head.headers;
                    return Ok(response);
                }
                Err(error) if reused && error.nothing_received() => continue,
                Err(h1::ExchangeError::TimedOut) => return Err(SendError::TimedOut(timeout)),
                Err(error) => return Err(error.into()),
            }
        }
    }

    /// A request with a body, streamed by hyper's client.
    async fn send_streaming(
        self: &Arc<Self>,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, SendError> {
        loop {
            let (mut sender, reused) = match self.checkout() {
                Some(sender) => (sender, true),
                // Boxed: the rare path stays out of every request's future.
                None => (Box::pin(self.connect()).await?, false),
            };
            match sender.try_send_request(request).await {
                Ok(response) => {
                    let (parts, body) = response.into_parts();
                    let mut checkin = Checkin(Some((sender, Arc::clone(self))));
                    if body.is_end_stream() {
                        checkin.give_back();
                    }
                    return Ok(Response::from_parts(parts, WatchedBody::new(body, checkin)));
                }
                // Not written at all: a pooled connection closed while idle,
                // so another one may do. A new one that closes at once says
                // the upstream refuses: no retry (it would loop).
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if reused => request = unsent,
                    _ => return Err(SendError::Http(failed.into_error())),
                },
            }
        }
    }

    /// The most recently used idle connection ready for a request; expired
    /// and closed ones are dropped on the way. One not ready yet stays (its
    /// upstream answered before it had read the whole upload, which hyper
    /// is still sending): it is never waited for, so another request never
    /// waits on a client's slow upload.
    fn checkout(&self) -> Option<SendRequest<UpstreamBody>> {
        let mut idle = self.lock();
        close_expired(&mut idle, Instant::now(), |entry| entry.since);
        while let Some(at) = idle
            .iter()
            .rposition(|entry| entry.sender.is_ready() || entry.sender.is_closed())
        {
            let entry = idle.remove(at)?;
            if !entry.sender.is_closed() {
                return Some(entry.sender);
            }
        }
        None
    }

    /// The most recently used idle plain connection, if one is young enough.
    /// Connections that received anything while idle (a stray answer,
    /// their end), as far as this thread has seen, are closed on the way.
    fn checkout_plain(&self, now: Instant) -> Option<h1::Connection> {
        let mut idle = self.plain_idle_here();
        close_expired(&mut idle, now, |(_, since)| *since);
        while let Some((connection, _)) = idle.pop_back() {
            if connection.still_idle() {
                return Some(connection);
            }
        }
        None
    }

    /// A new TCP connection to the upstream.
    async fn open(&self) -> Result<TcpStream, SendError> {
        // An IPv6 host comes bracketed (`[::1]`); the resolver wants it bare.
        let host = self.authority.host().trim_start_matches('[').trim_end_matches(']');
        let address = (host, self.authority.port_u16().unwrap_or(80));
        let stream = match tokio::time::timeout(self.connect_timeout, TcpStream::connect(address)).await {
            Ok(Ok(stream)) => stream,
            Ok(Err(e)) => return Err(SendError::Connect(e)),
            Err(_) => {
                return Err(SendError::Connect(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no answer within {} ms", self.connect_timeout.as_millis()),
                )))
            }
        };
        // Proxied requests are small and latency-bound: no Nagle delay.
        stream.set_nodelay(true).map_err(SendError::Connect)?;
        Ok(stream)
    }

    async fn connect(&self) -> Result<SendRequest<UpstreamBody>, SendError> {
        let stream = self.open().await?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection closed on an error");
            }
        });
        Ok(sender)
    }

    fn checkin(&self, sender: SendRequest<UpstreamBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.lock();
        let now = Instant::now();
        close_expired(&mut idle, now, |entry| entry.since);
        if idle.len() < MAX_IDLE {
            idle.push_back(Idle { sender, since: now });
        }
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`]; run
    /// periodically, so a pool nobody uses (the standby's) holds nothing.
    pub fn prune(&self) {
        let now = Instant::now();
        for idle in &self.idle {
            close_expired(&mut idle.lock(), now, |entry| entry.since);
        }
        for idle in &self.plain_idle {
            close_expired(&mut idle.lock(), now, |(_, since)| *since);
        }
    }

    /// Idle connections held now (open or not yet found closed), all lanes.
    pub fn idle_count(&self) -> usize {
        let streaming: usize = self.idle.iter().map(|idle| idle.lock().len()).sum();
        let plain: usize = self.plain_idle.iter().map(|idle| idle.lock().len()).sum();
        streaming + plain
    }

    /// The idle plain connections of this thread's lane.
    fn plain_idle_here(&self) -> MutexGuard<'_, VecDeque<IdlePlain>> {
        self.plain_idle[lanes::current()].lock()
    }

    /// The idle streaming connections of this thread's lane.
    fn lock(&self) -> MutexGuard<'_, VecDeque<Idle>> {
        self.idle[lanes::current()].lock()
    }
}

impl h1::Reuse for Pool {
    fn give_back(&self, connection: h1::Connection) {
        let mut idle = self.plain_idle_here();
        let now = Instant::now();
        close_expired(&mut idle, now, |(_, since)| *since);
        if idle.len() < MAX_IDLE {
            idle.push_back((connection, now));
        }
    }
}

/// Closes the connections idle for longer than [`IDLE_TIMEOUT`] at `now`,
/// oldest first: once one is young enough, so are the rest. (The caller
/// reads the clock once for this and what it does next.)
fn close_expired<T>(idle: &mut VecDeque<T>, now: Instant, since: impl Fn(&T) -> Instant) {
    while idle
        .front()
        .is_some_and(|oldest| now.saturating_duration_since(since(oldest)) > IDLE_TIMEOUT)
    {
        idle.pop_front();
    }
}

/// A response body that gives its connection back to the pool when it has
/// been read to the end; dropped before that, the connection closes.
pub type PooledBody = WatchedBody<Incoming, Checkin>;

/// The connection a response body came on, until its end.
pub struct Checkin(Option<(SendRequest<UpstreamBody>, Arc<Pool>)>);

impl Checkin {
    fn give_back(&mut self) {
        if let Some((sender, pool)) = self.0.take() {
            pool.checkin(sender);
        }
    }
}

impl BodyWatcher<hyper::Error> for Checkin {
    fn observe(&mut self, event: BodyEvent<'_, hyper::Error>) {
        match event {
            BodyEvent::End => self.give_back(),
            // The connection is broken: dropped, never reused.
            BodyEvent::Failed(_) => self.0 = None,
            BodyEvent::Waiting | BodyEvent::Frame => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use hyper::service::service_fn;
    use tokio::net::TcpListener;

    use super::*;

    fn authority_of(listener: &TcpListener) -> Authority {
        let address = listener.local_addr().expect("addr");
        address.to_string().parse().expect("authority")
    }

    /// A server that counts the connections it accepted and answers "ok",
    /// closing each after `requests_per_connection` requests; with 0 it
    /// closes each at once.
    async fn server(requests_per_connection: usize) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = authority_of(&listener);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                if requests_per_connection == 0 {
                    continue;
                }
                let served = Arc::new(AtomicUsize::new(0));
                tokio::spawn(async move {
                    let service = service_fn(move |_request| {
                        let last = served.fetch_add(1, Ordering::SeqCst) + 1 >= requests_per_connection;
                        async move {
                            let mut response = Response::new(http_body_util::Full::new(Bytes::from_static(b"ok")));
                            if last {
                                response
                                    .headers_mut()
                                    .insert(http::header::CONNECTION, HeaderValue::from_static("close"));
                            }
                            Ok::<_, std::convert::Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (authority, accepted)
    }

    async fn get(pool: &Arc<Pool>) -> Result<String, SendError> {
        let request = Request::get("/").body(empty_body()).expect("request");
        let response = pool.send(request, std::iter::empty(), Duration::from_secs(5)).await?;
        let body = response.into_body().collect().await.expect("the whole body").to_bytes();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn reuses_a_connection_once_its_response_was_read() {
        let (authority, accepted) = server(usize::MAX).await;
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        for _ in 0..20 {
            assert_eq!(get(&pool).await.expect("answer"), "ok");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
        assert_eq!(pool.idle_count(), 1);
    }

    #[tokio::test]
    async fn each_lane_reuses_only_the_connections_it_opened() {
        let (authority, accepted) = server(usize::MAX).await;
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        let lanes = vigie_telemetry::lanes::Lanes::start(2, "test-lane").expect("lanes");
        // Lanes 1, 2, 1, 2, ...: the second lane may not take the first
        // one's connection (registered with another runtime's driver).
        for round in 0..6 {
            let pool = Arc::clone(&pool);
            let answer = lanes.next().spawn(async move { get(&pool).await.expect("answer") });
            assert_eq!(answer.await.expect("ran"), "ok", "round {round}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 2, "one connection per lane");
        assert_eq!(pool.idle_count(), 2);
        // A thread outside the lanes has a list of its own.
        get(&pool).await.expect("answer");
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_connection_the_server_closes_is_not_reused() {
        // Every second response says `Connection: close`.
        let (authority, accepted) = server(2).await;
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        for _ in 0..10 {
            assert_eq!(get(&pool).await.expect("answer"), "ok");
            // The server's close reaches the pooled connection soon after.
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_body_dropped_before_its_end_takes_its_connection_along() {
        let (authority, accepted) = server(usize::MAX).await;
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        let request = Request::get("/").body(empty_body()).expect("request");
        drop(
            pool.send(request, std::iter::empty(), Duration::from_secs(5))
                .await
                .expect("head"),
        );
        assert_eq!(pool.idle_count(), 0);
        assert_eq!(get(&pool).await.expect("answer"), "ok");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = authority_of(&listener);
        drop(listener);
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        let error = get(&pool).await.expect_err("refused");
        assert!(matches!(error, SendError::Connect(_)), "{error:?}");
    }

    #[tokio::test]
    async fn idle_connections_expire() {
        let (authority, accepted) = server(usize::MAX).await;
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        get(&pool).await.expect("answer");
        assert_eq!(pool.idle_count(), 1);
        // `Instant` is the real clock: wait past the timeout for real.
        std::thread::sleep(IDLE_TIMEOUT + Duration::from_millis(50));
        pool.prune();
        assert_eq!(pool.idle_count(), 0);
        get(&pool).await.expect("answer");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_new_connection_closed_at_once_is_an_error_not_a_loop() {
        let (authority, accepted) = server(0).await;
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        let answer = tokio::time::timeout(Duration::from_secs(5), get(&pool)).await;
        assert!(matches!(answer, Ok(Err(_))), "an error at once: {answer:?}");
        assert!(
            accepted.load(Ordering::SeqCst) <= 2,
            "{} connections",
            accepted.load(Ordering::SeqCst)
        );
    }

    /// A kept-alive connection the upstream closed while it sat in the
    /// pool (its keep-alive timeout) costs the request nothing: it goes out
    /// again on a new connection.
    #[tokio::test]
    async fn a_request_on_a_connection_closed_while_idle_goes_out_again() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = authority_of(&listener);
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&accepted);
        tokio::spawn(async move {
            // One answer per connection, then the connection closes without
            // saying so in the answer.
            while let Ok((mut stream, _)) = listener.accept().await {
                counter.fetch_add(1, Ordering::SeqCst);
                let mut head = [0u8; 1024];
                let _ = stream.read(&mut head).await;
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
            }
        });
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        for _ in 0..3 {
            assert_eq!(get(&pool).await.expect("answer"), "ok");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
    }

    /// Bytes an upstream sends after a complete response (a second answer,
    /// a body too long for its length) are not taken for the next
    /// request's answer once the proxy thread has seen them (here: it
    /// waited 100 ms): a pooled connection that received anything while
    /// idle is closed, and the request goes on another one. (Bytes that
    /// come within the same batch of tasks are not seen: `h1::Connection::still_idle`.)
    #[tokio::test]
    async fn a_connection_that_received_anything_while_idle_is_not_reused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = authority_of(&listener);
        tokio::spawn(async move {
            let mut first = true;
            while let Ok((mut stream, _)) = listener.accept().await {
                let stray = std::mem::replace(&mut first, false);
                tokio::spawn(async move {
                    let mut head = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut head).await {
                        if n == 0 {
                            return;
                        }
                        let path = String::from_utf8_lossy(&head[..n])
                            .split(' ')
                            .nth(1)
                            .unwrap_or("")
                            .to_owned();
                        let body = format!("reply to {path}");
                        let answer = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                        let _ = stream.write_all(answer.as_bytes()).await;
                        if stray {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            let _ = stream
                                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nSTALE")
                                .await;
                        }
                    }
                });
            }
        });
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        for path in ["/a", "/b", "/c"] {
            let request = Request::get(path).body(empty_body()).expect("request");
            let response = pool
                .send(request, std::iter::empty(), Duration::from_secs(5))
                .await
                .expect("an answer");
            let body = response.into_body().collect().await.expect("the whole body").to_bytes();
            assert_eq!(String::from_utf8_lossy(&body), format!("reply to {path}"));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn extra_fields_reach_the_upstream_once_on_either_kind_of_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let authority = authority_of(&listener);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    // Answers with the values of the fields it was sent.
                    let service = service_fn(|request: Request<Incoming>| async move {
                        let seen: Vec<String> = ["host", "x-forwarded-for", "x-request-id"]
                            .into_iter()
                            .map(|name| {
                                let values: Vec<&str> = request
                                    .headers()
                                    .get_all(name)
                                    .iter()
                                    .map(|v| v.to_str().unwrap_or("?"))
                                    .collect();
                                format!("{name}={}", values.join("|"))
                            })
                            .collect();
                        Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(Bytes::from(
                            seen.join(" "),
                        ))))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        let host = authority.to_string();
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        let forwarded = HeaderValue::from_static("10.0.0.1");
        let id = HeaderValue::from_static("abc");
        let extra = [
            (HeaderName::from_static("x-forwarded-for"), &forwarded),
            (HeaderName::from_static("x-request-id"), &id),
        ];
        // A GET goes on a plain connection, a POST through hyper's client.
        for method in [Method::GET, Method::POST] {
            let request = Request::builder()
                .method(method.clone())
                .uri("/")
                .body(empty_body())
                .expect("request");
            let response = pool
                .send(request, extra.clone().into_iter(), Duration::from_secs(5))
                .await
                .expect("an answer");
            let plain = matches!(response.body(), http_body_util::Either::Right(_));
            assert_eq!(
                plain,
                method == Method::GET,
                "{method} went on the wrong kind of connection"
            );
            let body = response.into_body().collect().await.expect("the whole body").to_bytes();
            assert_eq!(
                String::from_utf8_lossy(&body),
                format!("host={host} x-forwarded-for=10.0.0.1 x-request-id=abc"),
                "{method}"
            );
        }
    }

    #[tokio::test]
    async fn an_ipv6_upstream_is_reached() {
        let Ok(listener) = std::net::TcpListener::bind("[::1]:0") else {
            eprintln!("no IPv6 loopback here: skipped");
            return;
        };
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let listener = TcpListener::bind(("::1", port)).await.expect("bind [::1]");
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = service_fn(|_request| async {
                    Ok::<_, std::convert::Infallible>(Response::new(http_body_util::Full::new(Bytes::from_static(
                        b"ok",
                    ))))
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        let authority: Authority = format!("[::1]:{port}").parse().expect("authority");
        let pool = Arc::new(Pool::new(authority, Duration::from_secs(1)));
        assert_eq!(get(&pool).await.expect("answer over IPv6"), "ok");
    }
}
