//! How every server role stops: the signals, and the drain that follows.

use std::future::Future;
use std::time::Duration;

/// Resolves on SIGTERM or SIGINT (Ctrl-C).
pub async fn signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!(signal = "SIGINT", "shutdown requested"),
        _ = terminate => tracing::info!(signal = "SIGTERM", "shutdown requested"),
    }
}

/// The listeners' side of a shutdown: each server is given
/// [`Closing::closed`] as its stop, and closes its listener when
/// [`until_drained`] begins the drain.
#[derive(Clone)]
pub struct Closing(tokio::sync::watch::Sender<bool>);

impl Default for Closing {
    fn default() -> Self {
        Closing(tokio::sync::watch::Sender::new(false))
    }
}

impl Closing {
    /// Resolves once the drain has begun.
    pub fn closed(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut closing = self.0.subscribe();
        async move {
            let _ = closing.wait_for(|closed| *closed).await;
        }
    }

    pub fn is_closed(&self) -> bool {
        *self.0.borrow()
    }

    /// Runs one of several servers: `Ok` when it ended after the drain
    /// began, `Err(name)` when it ended by itself before (so a `try_join`
    /// of them ends at once on the first that fails, and waits for all
    /// when drained).
    pub async fn serve(&self, server: impl Future<Output = ()>, name: &'static str) -> Result<(), &'static str> {
        server.await;
        if self.is_closed() {
            Ok(())
        } else {
            Err(name)
        }
    }
}

/// How a server role's run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended<T> {
    /// The servers stopped before any stop was asked for, with this.
    Early(T),
    /// Stopped, and every request in flight finished within the drain timeout.
    Drained,
    /// Stopped, with requests still in flight at the drain timeout.
    TimedOut,
}

/// The shutdown sequence of every server role. Runs `servers` until `stop`
/// resolves (the role's own first steps go into it: the backend reports
/// not ready and waits for its delay, the router pauses its guard), then
/// closes the listeners through `closing` and gives the requests in flight
/// `drain_timeout` to finish. A server that ends before the stop ends the
/// run at once ([`Ended::Early`]).
pub async fn until_drained<T>(
    servers: impl Future<Output = T>,
    stop: impl Future<Output = ()>,
    closing: &Closing,
    drain_timeout: Duration,
) -> Ended<T> {
    tokio::pin!(servers);
    tokio::select! {
        ended = &mut servers => return Ended::Early(ended),
        () = stop => {}
    }
    closing.0.send_replace(true);
    tracing::info!(
        timeout_ms = drain_timeout.as_millis() as u64,
        "listeners closed; draining in-flight requests"
    );
    match tokio::time::timeout(drain_timeout, servers).await {
        Ok(_) => Ended::Drained,
        // The caller says what was left: it knows what it counts.
        Err(_) => Ended::TimedOut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A server that stops `after` its closing signal (or ends by itself
    /// after `fails_after`).
    async fn server(closing: &Closing, after: Duration, fails_after: Option<Duration>) -> &'static str {
        let closed = closing.closed();
        let failure = async {
            match fails_after {
                Some(after) => tokio::time::sleep(after).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = closed => {
                tokio::time::sleep(after).await;
                "drained"
            }
            () = failure => "failed",
        }
    }

    #[tokio::test(start_paused = true)]
    async fn servers_close_on_the_stop_and_get_the_drain_timeout_to_finish() {
        let closing = Closing::default();
        let stop = tokio::time::sleep(Duration::from_secs(1));
        let servers = server(&closing, Duration::from_secs(2), None);
        let ended = until_drained(servers, stop, &closing, Duration::from_secs(5)).await;
        assert_eq!(ended, Ended::Drained);
        assert!(closing.is_closed());

        let closing = Closing::default();
        let stop = tokio::time::sleep(Duration::from_secs(1));
        let servers = server(&closing, Duration::from_secs(60), None);
        let started = tokio::time::Instant::now();
        let ended = until_drained(servers, stop, &closing, Duration::from_secs(5)).await;
        assert_eq!(ended, Ended::TimedOut);
        assert_eq!(started.elapsed(), Duration::from_secs(6));
    }

    #[tokio::test(start_paused = true)]
    async fn a_server_that_ends_before_the_stop_ends_the_run_without_closing() {
        let closing = Closing::default();
        let stop = std::future::pending();
        let servers = server(&closing, Duration::ZERO, Some(Duration::from_secs(3)));
        let ended = until_drained(servers, stop, &closing, Duration::from_secs(5)).await;
        assert_eq!(ended, Ended::Early("failed"));
        assert!(!closing.is_closed());
    }
}
