//! Serving HTTP/1.1 connections with limits, for every listener of every
//! role (the backend, the router's public and admin listeners):
//!
//! - **a time limit on a request head**: a connection has
//!   `header_read_timeout` to send a complete request head, counted from
//!   its opening or, on a kept-alive connection, from the end of the last
//!   response (hyper's header read timeout covers both), so neither a
//!   client that sends one byte nor an idle keep-alive holds a connection
//!   for long;
//! - **a cap on connections per listener**: at the cap, the connection
//!   that has waited longest without a request in flight (idle, or still
//!   sending its head) is closed to make room; connections serving a
//!   request are never closed for a newcomer. A flood of slow connections
//!   thus evicts itself while real clients, which send their head at once,
//!   get served; and one listener (say, the router's admin port) can never
//!   use the file descriptors another needs;
//! - **accept errors** (out of file descriptors) pause the loop instead of
//!   spinning;
//! - **shutdown**: once `stopped` resolves, the listener closes, idle and
//!   half-sent connections are closed at once, and only connections with a
//!   request in flight are drained (hyper's graceful shutdown: the current
//!   response is finished, then the connection closes). `serve` returns
//!   when they are done; the caller bounds that wait.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

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
    /// The limits of a listener clients reach directly (or through a proxy
    /// when `behind_proxy`: room for the fields it adds).
    pub fn limits(&self, behind_proxy: bool) -> Limits {
        Limits {
            header_read_timeout: self.header_read_timeout,
            max_connections: self.max_connections,
            max_headers: self.max_headers + if behind_proxy { defaults::PROXY_HEADROOM } else { 0 },
        }
    }
}

/// One open connection, as the cap sees it. It counts until its task has
/// dropped the socket, so the cap bounds the descriptors really open.
struct Tracked {
    opened: Instant,
    /// Requests whose response is not fully sent yet.
    in_flight: Arc<AtomicUsize>,
    /// Closes the connection when sent (eviction); set means closing.
    close: watch::Sender<bool>,
}

/// Whether a new connection may be accepted.
enum Room {
    Free,
    /// An evicted connection is closing: accept once it has.
    Closing,
    /// Every connection serves a request.
    AllBusy,
}

/// The open connections of one listener.
#[derive(Default)]
struct Connections {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Tracked>>,
}

impl Connections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Tracked>> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes room for one more under `max`: closes the oldest connection
    /// without a request in flight, unless one is closing already.
    fn make_room(&self, max: usize) -> Room {
        let open = self.lock();
        if open.len() < max {
            return Room::Free;
        }
        if open.values().any(|c| *c.close.borrow()) {
            return Room::Closing;
        }
        let oldest_idle = open
            .values()
            .filter(|c| c.in_flight.load(Ordering::Acquire) == 0)
            .min_by_key(|c| c.opened);
        match oldest_idle {
            Some(evicted) => {
                let _ = evicted.close.send(true);
                Room::Closing
            }
            None => Room::AllBusy,
        }
    }
}

/// Serves `listener` until `stopped`, then drains (see the module doc).
/// `service` makes the service of each connection from its peer address.
pub async fn serve<M, S, B>(
    listener: TcpListener,
    name: &'static str,
    limits: Limits,
    service: M,
    stopped: impl Future<Output = ()>,
) where
    M: Fn(SocketAddr) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let connections = Arc::new(Connections::default());
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_headers(limits.max_headers);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(stopped);
    let mut at_cap_logged = false;
    loop {
        // Reap finished connection tasks as we go.
        while tasks.try_join_next().is_some() {}
        match connections.make_room(limits.max_connections) {
            Room::Free => at_cap_logged = false,
            room => {
                if matches!(room, Room::AllBusy) && !at_cap_logged {
                    tracing::warn!(
                        listener = name,
                        max = limits.max_connections,
                        "connection cap reached, all busy; waiting"
                    );
                    at_cap_logged = true;
                }
                // Wait for a connection to end (the evicted one, or any).
                tokio::select! {
                    () = &mut stopped => break,
                    _ = tasks.join_next() => continue,
                }
            }
        }
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
        let id = connections.next_id.fetch_add(1, Ordering::Relaxed);
        let in_flight = Arc::new(AtomicUsize::new(0));
        let (close_tx, close_rx) = watch::channel(false);
        connections.lock().insert(
            id,
            Tracked {
                opened: Instant::now(),
                in_flight: Arc::clone(&in_flight),
                close: close_tx,
            },
        );
        let counted = Counted {
            inner: service(peer),
            in_flight: Arc::clone(&in_flight),
        };
        let connection = http.serve_connection(TokioIo::new(stream), counted);
        let connections = Arc::clone(&connections);
        let shutdown = shutdown_rx.clone();
        tasks.spawn(async move {
            drive(connection, in_flight, close_rx, shutdown, peer).await;
            connections.lock().remove(&id);
        });
    }
    drop(listener);
    let _ = shutdown_tx.send(true);
    while tasks.join_next().await.is_some() {}
}

/// Runs one connection until it ends, is evicted, or the server stops: then
/// it is closed at once when idle, or finishes its request first.
async fn drive<S, B>(
    connection: hyper::server::conn::http1::Connection<TokioIo<tokio::net::TcpStream>, Counted<S>>,
    in_flight: Arc<AtomicUsize>,
    mut close: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
    peer: SocketAddr,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
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
        _ = close.wait_for(|c| *c) => return,
        _ = shutdown.wait_for(|s| *s) => {}
    }
    if in_flight.load(Ordering::Acquire) == 0 {
        return;
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

/// A service that counts its requests in flight until their response body
/// is fully sent (or dropped).
struct Counted<S> {
    inner: S,
    in_flight: Arc<AtomicUsize>,
}

impl<S, B> Service<Request<Incoming>> for Counted<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<CountedBody<B>>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let guard = InFlight::enter(&self.in_flight);
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            Ok(response.map(|body| CountedBody {
                inner: body,
                _guard: guard,
            }))
        })
    }
}

/// One request in flight on its connection, until dropped.
struct InFlight(Arc<AtomicUsize>);

impl InFlight {
    fn enter(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::AcqRel);
        InFlight(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in flight.
    pub struct CountedBody<B> {
        #[pin]
        inner: B,
        _guard: InFlight,
    }
}

impl<B: Body> Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
