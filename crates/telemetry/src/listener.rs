//! Serving HTTP/1.1 connections with limits, for every listener of every
//! role (the backend, the router's public and admin listeners):
//!
//! - **a time limit on a request head**: a connection has
//!   `header_read_timeout` to send a complete request head, counted from
//!   its opening or, on a kept-alive connection, from the end of the last
//!   response, so neither a client that sends one byte nor an idle
//!   keep-alive holds a connection for long. One sweep of the listener's
//!   connections, four times per timeout (at most every second), closes
//!   those past it: hyper's own header read timeout arms a timer for every
//!   request, which cost 1,400 of the 26,000 instructions of a backend
//!   request (bench/instructions.sh); the sweep costs nothing per request
//!   (a request's end takes the time the last sweep read), so a connection
//!   is closed within a quarter of the timeout either side of it;
//! - **a cap on connections per listener**: a new connection is accepted,
//!   and if that puts the listener over its cap, one connection without a
//!   request in flight is closed to make room before the newcomer is
//!   served: first one that never completed a request head (oldest first),
//!   else the one idle the longest. A connection serving a request is never
//!   closed for a newcomer; when every one is busy, the newcomer waits for
//!   one to finish. A flood of slow connections thus evicts itself while
//!   real clients, which send their head at once, get served, and one
//!   listener (say, the router's admin port) can never use the descriptors
//!   another needs. Descriptors in use: at most the cap plus the newcomer;
//! - **accept errors** (out of file descriptors) pause the loop instead of
//!   spinning;
//! - **shutdown**: once `stopped` resolves, the listener closes, idle and
//!   half-sent connections are closed (within a short grace for a response
//!   still being flushed), and only connections with a request in flight
//!   are drained (hyper's graceful shutdown: the current response is
//!   finished, then the connection closes). `serve` returns when they are
//!   done; the caller bounds that wait.
//!
//! A request body's pace is the service's to bound (the backend and the
//! admin API wrap their bodies with a per-frame timeout; the router's proxy
//! bounds an upload by its request timeout).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Incoming};
use hyper::service::Service;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use parking_lot::{Mutex, MutexGuard};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tower::Layer;
use tower_http::timeout::{RequestBodyTimeout, RequestBodyTimeoutLayer};

use crate::body::{BodyEvent, BodyWatcher, WatchedBody};
use crate::lanes::Lanes;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// On shutdown, how long a connection without a request in flight may
/// take to close on its own (a response being flushed) before it is cut.
const IDLE_CLOSE_GRACE: Duration = Duration::from_millis(250);
/// The longest pause between two sweeps for connections past their
/// header read timeout.
const MAX_SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The limits of one listener.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Longest wait for a complete request head, on a new or an idle
    /// kept-alive connection.
    pub header_read_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Request head fields at most (hyper's default is 100); more is 431.
    pub max_headers: usize,
}

/// The shared defaults, one place for every listener (flags may change them).
pub mod defaults {
    /// A client sends its request head in one go; 5 s covers a slow link
    /// and leaves an idle or slow connection little time to hold a slot.
    pub const HEADER_READ_TIMEOUT: &str = "5s";
    pub const MAX_CONNECTIONS: usize = 1024;
    /// The router's admin API: a handful of clients (Prometheus, the CLI,
    /// health checks) need no more.
    pub const ADMIN_MAX_CONNECTIONS: usize = 64;
    /// Request header fields a client may send, hyper's default.
    pub const MAX_HEADERS: usize = 100;
    /// Fields a proxy in front adds on the way (X-Forwarded-For, -Proto,
    /// -Host, X-Request-Id, traceparent, tracestate, and room to spare): a
    /// backend accepts this many more, so whatever the router accepted
    /// reaches it whole instead of failing there with 431.
    pub const PROXY_HEADROOM: usize = 8;
}

/// The listener flags every server role shares.
#[derive(clap::Args, Debug, Clone)]
pub struct LimitArgs {
    /// Longest wait for a complete request head, on a new connection or an
    /// idle kept-alive one; then the connection is closed.
    #[arg(long, env = "VIGIE_HEADER_READ_TIMEOUT", value_name = "DURATION",
          default_value = defaults::HEADER_READ_TIMEOUT, value_parser = crate::config::parse_positive_duration)]
    pub header_read_timeout: Duration,
    /// Open connections at most, per listener; at the cap the connection idle
    /// the longest is closed to make room.
    #[arg(long, env = "VIGIE_MAX_CONNECTIONS", value_name = "N", default_value_t = defaults::MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1_000_000))]
    pub max_connections: usize,
    /// Request header fields a client may send, directly or through the
    /// router (more: 431).
    #[arg(long, env = "VIGIE_MAX_HEADERS", value_name = "N", default_value_t = defaults::MAX_HEADERS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1000))]
    pub max_headers: usize,
}

impl LimitArgs {
    /// The limits of a listener clients reach directly.
    pub fn direct(&self) -> Limits {
        Limits {
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            max_headers: self.max_headers,
        }
    }

    /// The limits of a listener behind a proxy: room for the header fields
    /// it adds.
    pub fn behind_proxy(&self) -> Limits {
        Limits {
            max_headers: self.max_headers + defaults::PROXY_HEADROOM,
            ..self.direct()
        }
    }
}

/// The service of each connection for an axum app, its request bodies
/// bounded: a body that sends nothing for `body_timeout` fails (the app
/// answers 400) and the connection is freed, so a stalled upload holds no
/// slot for long.
pub fn app_service(
    app: axum::Router,
    body_timeout: Duration,
) -> impl Fn(SocketAddr) -> TowerToHyperService<RequestBodyTimeout<axum::Router>> {
    let app = RequestBodyTimeoutLayer::new(body_timeout).layer(app);
    move |_peer| TowerToHyperService::new(app.clone())
}

/// What the cap knows of one connection, shared with its requests.
struct ConnState {
    opened_ms: u64,
    /// Requests whose response is not fully sent yet.
    in_flight: AtomicUsize,
    /// Whether a complete request head ever arrived.
    served: AtomicBool,
    /// When the last request ended (ms since the listener started).
    idle_since_ms: AtomicU64,
    listener: Arc<Connections>,
    /// Raised to close the connection.
    close: CloseSignal,
}

/// Why a connection is told to close.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CloseReason {
    /// The server stops: the request in flight, if any, ends first.
    Shutdown = 1,
    /// Evicted for a newcomer or past its header read timeout: at once.
    Evicted = 2,
}

/// What a connection's task waits on beside the connection: a flag and the
/// task's waker. The task checks it at every wake-up (several per request),
/// so it costs an atomic load and a waker comparison; a channel's receiver
/// cost a few hundred instructions per request (bench/instructions.sh).
#[derive(Default)]
struct CloseSignal {
    reason: AtomicU8,
    waker: Mutex<Option<Waker>>,
}

impl CloseSignal {
    /// Tells the connection to close; eviction wins over shutdown.
    fn raise(&self, reason: CloseReason) {
        self.reason.fetch_max(reason as u8, Ordering::AcqRel);
        if let Some(waker) = self.waker.lock().take() {
            waker.wake();
        }
    }

    fn raised(&self) -> Option<CloseReason> {
        match self.reason.load(Ordering::Acquire) {
            0 => None,
            1 => Some(CloseReason::Shutdown),
            _ => Some(CloseReason::Evicted),
        }
    }

    fn poll_raised(&self, cx: &mut Context<'_>) -> Poll<CloseReason> {
        if let Some(reason) = self.raised() {
            return Poll::Ready(reason);
        }
        {
            let mut waker = self.waker.lock();
            if !waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                *waker = Some(cx.waker().clone());
            }
        }
        // Raised between the check and the registration: seen here.
        match self.raised() {
            Some(reason) => Poll::Ready(reason),
            None => Poll::Pending,
        }
    }
}

impl ConnState {
    /// Eviction order: never served first (oldest first), then idle the
    /// longest. None while a request is in flight.
    fn eviction_key(&self) -> Option<(bool, u64)> {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let served = self.served.load(Ordering::Acquire);
        let since = if served {
            self.idle_since_ms.load(Ordering::Acquire)
        } else {
            self.opened_ms
        };
        Some((served, since))
    }
}

/// One open connection in the listener's table; it stays there until its
/// task has dropped the socket, so the table counts descriptors in use.
struct OpenConnection {
    state: Arc<ConnState>,
}

impl OpenConnection {
    fn evicted(&self) -> bool {
        self.state.close.raised() == Some(CloseReason::Evicted)
    }

    /// Tells the connection to close at once; false when its task is gone
    /// (it panicked): nothing but the table holds its state.
    fn evict(&self) -> bool {
        self.state.close.raise(CloseReason::Evicted);
        Arc::strong_count(&self.state) > 1
    }
}

/// Whether the newcomer may be served.
enum Room {
    Free,
    /// A connection was told to close, or all are busy: wait for a change.
    Wait {
        all_busy: bool,
    },
}

/// The open connections of one listener.
struct Connections {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, OpenConnection>>,
    /// Woken when a request ends or a connection closes, while `waiting`.
    changed: Notify,
    /// The accept loop waits for room: only then is a request's end worth
    /// a wake-up (a shared cache line touched by every request otherwise).
    waiting: AtomicBool,
    /// `now_ms` as of the last sweep: when a request ends, the time is read
    /// here rather than from the clock (one read per sweep, not one per
    /// request); idle times are then known to within a sweep interval.
    coarse_now_ms: AtomicU64,
}

impl Connections {
    fn new() -> Arc<Self> {
        Arc::new(Connections {
            started: Instant::now(),
            next_id: AtomicU64::new(0),
            open: Mutex::new(HashMap::new()),
            changed: Notify::new(),
            waiting: AtomicBool::new(false),
            coarse_now_ms: AtomicU64::new(0),
        })
    }

    /// Tells every connection past its header read timeout to close: no
    /// request in flight, and no complete head since it opened or since
    /// its last response ended, for longer than `timeout_ms`.
    fn close_stale(&self, timeout_ms: u64) {
        let now = self.now_ms();
        self.coarse_now_ms.store(now, Ordering::Release);
        for connection in self.lock().values() {
            let stale = connection
                .state
                .eviction_key()
                .is_some_and(|(_, since)| now.saturating_sub(since) > timeout_ms);
            if stale && !connection.evicted() {
                connection.evict();
            }
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<u64, OpenConnection>> {
        self.open.lock()
    }

    /// Registers a newcomer; removed from the table when the guard drops.
    fn register(self: &Arc<Self>) -> (Registered, Arc<ConnState>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let now = self.now_ms();
        let state = Arc::new(ConnState {
            opened_ms: now,
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(now),
            listener: Arc::clone(self),
            close: CloseSignal::default(),
        });
        self.lock().insert(
            id,
            OpenConnection {
                state: Arc::clone(&state),
            },
        );
        let registered = Registered {
            connections: Arc::clone(self),
            id,
        };
        (registered, state)
    }

    /// Makes room under `max` for the newcomer `id` (already counted): tells
    /// the connection to evict to close, and says whether to wait.
    fn make_room(&self, max: usize, id: u64) -> Room {
        let mut open = self.lock();
        if open.len() <= max {
            return Room::Free;
        }
        if open.values().any(OpenConnection::evicted) {
            return Room::Wait { all_busy: false };
        }
        loop {
            let evict = open
                .iter()
                .filter(|(other, _)| **other != id)
                .filter_map(|(other, c)| Some((c.state.eviction_key()?, *other)))
                .min()
                .map(|(_, other)| other);
            let Some(evict) = evict else {
                return Room::Wait { all_busy: true };
            };
            match open.get(&evict).map(OpenConnection::evict) {
                Some(true) => return Room::Wait { all_busy: false },
                // Its task is gone (it panicked): its entry only.
                _ => {
                    open.remove(&evict);
                    if open.len() <= max {
                        return Room::Free;
                    }
                }
            }
        }
    }
}

/// A connection's place in the table, given up when its task ends, however
/// it ends.
struct Registered {
    connections: Arc<Connections>,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.connections.lock().remove(&self.id);
        self.connections.changed.notify_one();
    }
}

/// Serves `listener` until `stopped`, then drains (see the module doc).
/// `service` makes the service of each connection from its peer address.
/// With `lanes`, each connection runs on the next lane (see
/// [`crate::lanes`]), else on the runtime that runs this.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    name: &'static str,
    limits: Limits,
    service: M,
    lanes: Option<Arc<Lanes>>,
    stopped: impl Future<Output = ()>,
) where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = Connections::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.max_headers(limits.max_headers);
    let sweeper = tokio::spawn(sweep(Arc::clone(&connections), limits.header_read_timeout));
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stopped);
    'accepting: loop {
        while tasks.try_join_next().is_some() {}
        let accepted = tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                tracing::warn!(listener = name, error = %error, "accept failed");
                tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (registered, state) = connections.register();
        let mut all_busy_logged = false;
        // Set before looking, so that a request ending meanwhile leaves its
        // wake-up (a Notify permit) for the wait below.
        connections.waiting.store(true, Ordering::Release);
        loop {
            match connections.make_room(limits.max_connections, registered.id) {
                Room::Free => break,
                Room::Wait { all_busy } => {
                    if all_busy && !all_busy_logged {
                        tracing::warn!(
                            listener = name,
                            max = limits.max_connections,
                            "connection cap reached with every connection busy; the newcomer waits"
                        );
                        all_busy_logged = true;
                    }
                    tokio::select! {
                        () = &mut stopped => break 'accepting,
                        () = connections.changed.notified() => {}
                    }
                }
            }
        }
        connections.waiting.store(false, Ordering::Release);
        let counted = Counted {
            inner: service(peer),
            state: Arc::clone(&state),
        };
        let Some(lanes) = &lanes else {
            let connection = http.serve_connection(TokioIo::new(stream), counted);
            tasks.spawn(async move {
                let _registered = registered;
                drive(connection, &state, peer).await;
            });
            continue;
        };
        // The socket moves to the lane's own I/O driver.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(error) => {
                tracing::warn!(listener = name, error = %error, "cannot hand a connection to a lane");
                continue;
            }
        };
        let http = http.clone();
        tasks.spawn_on(
            async move {
                let _registered = registered;
                match TcpStream::from_std(stream) {
                    Ok(stream) => drive(http.serve_connection(TokioIo::new(stream), counted), &state, peer).await,
                    Err(error) => tracing::warn!(listener = name, error = %error, "a lane cannot take a connection"),
                }
            },
            lanes.next(),
        );
    }
    drop(listener);
    for connection in connections.lock().values() {
        connection.state.close.raise(CloseReason::Shutdown);
    }
    while tasks.join_next().await.is_some() {}
    sweeper.abort();
}

/// Closes the connections past their header read timeout, four times per
/// timeout (at most every second), until aborted.
async fn sweep(connections: Arc<Connections>, timeout: Duration) {
    let timeout_ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
    let mut ticks = tokio::time::interval((timeout / 4).clamp(Duration::from_millis(10), MAX_SWEEP_INTERVAL));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        connections.close_stale(timeout_ms);
    }
}

/// Runs one connection until it ends, is evicted, or the server stops: then
/// it closes, at once when no request is in flight, else after its response.
async fn drive<S, B>(
    connection: hyper::server::conn::http1::Connection<TokioIo<TcpStream>, Counted<S>>,
    state: &ConnState,
    peer: SocketAddr,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(peer = %peer, error = %error, "client connection ended with an error");
            }
            return;
        }
        reason = std::future::poll_fn(|cx| state.close.poll_raised(cx)) => {
            if reason == CloseReason::Evicted {
                return;
            }
        }
    }
    let idle = state.in_flight.load(Ordering::Acquire) == 0;
    connection.as_mut().graceful_shutdown();
    if idle {
        let _ = tokio::time::timeout(IDLE_CLOSE_GRACE, connection).await;
    } else {
        let _ = connection.await;
    }
}

/// A service that counts its requests in flight until their response body
/// is fully sent (or dropped).
pub struct Counted<S> {
    inner: S,
    state: Arc<ConnState>,
}

impl<S, B> Service<Request<Incoming>> for Counted<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<CountedBody<B>>;
    type Error = Infallible;
    type Future = CountedFuture<S::Future>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        self.state.served.store(true, Ordering::Release);
        let guard = RequestGuard::enter(&self.state);
        CountedFuture {
            inner: self.inner.call(request),
            guard: Some(guard),
        }
    }
}

/// One request in flight on its connection, until dropped.
pub struct RequestGuard(Arc<ConnState>);

impl RequestGuard {
    fn enter(state: &Arc<ConnState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::AcqRel);
        RequestGuard(Arc::clone(state))
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let state = &self.0;
        if state.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            let now = state.listener.coarse_now_ms.load(Ordering::Acquire);
            state.idle_since_ms.store(now, Ordering::Release);
            if state.listener.waiting.load(Ordering::Acquire) {
                state.listener.changed.notify_one();
            }
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's future; its response body takes over the count.
    pub struct CountedFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F, B> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<CountedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = ready!(this.inner.poll(cx));
        let guard = this.guard.take();
        Poll::Ready(response.map(|response| response.map(|inner| WatchedBody::new(inner, guard))))
    }
}

/// A response body that keeps its request counted in flight until dropped.
pub type CountedBody<B> = WatchedBody<B, Option<RequestGuard>>;

/// The guard only has to live as long as the body: no event changes it.
impl<E> BodyWatcher<E> for Option<RequestGuard> {
    fn observe(&mut self, _event: BodyEvent<'_, E>) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A table of connections: (opened_ms, in_flight, served, idle_since_ms).
    /// The states are kept, as their tasks would: a connection whose task
    /// is gone is dropped from the table instead of being told to close.
    fn table_with(entries: &[(u64, usize, bool, u64)]) -> (Arc<Connections>, Vec<Arc<ConnState>>) {
        let connections = Connections::new();
        let mut tasks = Vec::new();
        for (id, (opened, in_flight, served, idle_since)) in (0u64..).zip(entries) {
            let state = Arc::new(ConnState {
                opened_ms: *opened,
                in_flight: AtomicUsize::new(*in_flight),
                served: AtomicBool::new(*served),
                idle_since_ms: AtomicU64::new(*idle_since),
                listener: Arc::clone(&connections),
                close: CloseSignal::default(),
            });
            tasks.push(Arc::clone(&state));
            connections.lock().insert(id, OpenConnection { state });
        }
        (connections, tasks)
    }

    fn evicted(connections: &Connections) -> Vec<u64> {
        let open = connections.lock();
        let mut ids: Vec<u64> = open.iter().filter(|(_, c)| c.evicted()).map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids
    }

    #[test]
    fn under_the_cap_nothing_is_closed() {
        let (table, _tasks) = table_with(&[(0, 0, true, 0), (1, 0, false, 1)]);
        assert!(matches!(table.make_room(2, 1), Room::Free));
        assert!(evicted(&table).is_empty());
    }

    #[test]
    fn a_connection_that_never_sent_a_head_goes_first_then_the_longest_idle_never_a_busy_one() {
        // 0: served, idle since 5; 1: never served, opened at 9; 2: busy;
        // 3: never served, opened at 3; 4: the newcomer.
        let (table, _tasks) = table_with(&[
            (0, 0, true, 5),
            (9, 0, false, 9),
            (1, 1, true, 1),
            (3, 0, false, 3),
            (10, 0, false, 10),
        ]);
        assert!(matches!(table.make_room(4, 4), Room::Wait { all_busy: false }));
        assert_eq!(evicted(&table), vec![3]);
        // While it closes, nothing else is told to.
        assert!(matches!(table.make_room(4, 4), Room::Wait { all_busy: false }));
        assert_eq!(evicted(&table), vec![3]);
    }

    #[test]
    fn among_served_connections_the_one_idle_longest_goes() {
        let (table, _tasks) = table_with(&[(0, 0, true, 50), (1, 0, true, 20), (2, 0, true, 90), (3, 0, false, 3)]);
        assert!(matches!(table.make_room(3, 3), Room::Wait { all_busy: false }));
        assert_eq!(evicted(&table), vec![1]);
    }

    #[test]
    fn a_connection_whose_task_is_gone_is_dropped_from_the_table() {
        let (table, mut tasks) = table_with(&[(0, 0, false, 0), (1, 0, false, 1), (2, 0, false, 2)]);
        drop(tasks.remove(0));
        assert!(matches!(table.make_room(2, 2), Room::Free));
        assert_eq!(table.lock().len(), 2);
    }

    #[test]
    fn the_newcomer_waits_when_every_other_connection_is_busy() {
        let (table, _tasks) = table_with(&[(0, 1, true, 0), (1, 2, true, 1), (2, 0, false, 2)]);
        assert!(matches!(table.make_room(2, 2), Room::Wait { all_busy: true }));
        assert!(evicted(&table).is_empty());
    }

    /// Sends one GET on a new connection and returns the response's body.
    async fn get_once(addr: SocketAddr, path: &str) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let request = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.expect("send");
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.expect("read to the close");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        answer.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned()
    }

    #[tokio::test]
    async fn with_lanes_connections_run_on_each_lane_in_turn_and_drain_on_stop() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let lanes = Arc::new(Lanes::start(2, "test-lane").expect("lanes"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = Limits {
            header_read_timeout: Duration::from_secs(5),
            max_connections: 16,
            max_headers: 100,
        };
        let service = |_peer| {
            hyper::service::service_fn(|request: Request<Incoming>| async move {
                if request.uri().path() == "/slow" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let lane = crate::lanes::current().to_string();
                Ok::<_, Infallible>(Response::new(http_body_util::Full::new(Bytes::from(lane))))
            })
        };
        let server = tokio::spawn(serve(listener, "test", limits, service, Some(lanes), async {
            let _ = stopped.await;
        }));
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(get_once(addr, "/").await);
        }
        assert_eq!(seen, ["1", "2", "1", "2"]);
        // A request in flight on a lane when the server stops is answered
        // before `serve` returns.
        let slow = tokio::spawn(get_once(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .expect("drained within 5 s")
            .expect("serve ran");
        assert_eq!(slow.await.expect("answered"), "1");
    }
}
