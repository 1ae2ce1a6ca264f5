//! The public listener: a plain hyper HTTP/1.1 server calling
//! [`proxy::handle`] for every request. No web framework in between: the
//! proxy needs no routing, and each layer costs on every request.

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::proxy::{self, Proxy};

/// Pause after a failed accept (e.g. out of file descriptors), so the loop
/// does not spin while the condition lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);

/// Serves until `stopped` resolves, then stops accepting and waits for the
/// open connections to finish their in-flight requests (the caller bounds
/// that wait).
pub async fn serve(listener: TcpListener, proxy: Arc<Proxy>, stopped: impl std::future::Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer enables hyper's header read timeout (30 s), so a client that
    // opens a connection and sends nothing does not hold it forever.
    http.timer(TokioTimer::new());
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            () = &mut stopped => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    // Proxied requests are small and latency-bound: no Nagle delay.
                    let _ = stream.set_nodelay(true);
                    let proxy = Arc::clone(&proxy);
                    let service = service_fn(move |request| proxy::handle(Arc::clone(&proxy), peer, request));
                    let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = connection.await {
                            tracing::debug!(peer = %peer, error = %crate::health::describe(&e), "client connection ended with an error");
                        }
                    });
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
