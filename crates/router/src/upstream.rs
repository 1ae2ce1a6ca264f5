//! One backend color: its base URL, its keep-alive connection [`Pool`], its
//! in-flight request count, its [`TargetState`] and its last health reading.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::uri::{Authority, Scheme};
use parking_lot::Mutex;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;
use vigie_telemetry::Color;

use crate::pool::Pool;
use crate::target::TargetState;

/// A backend base URL: `http://host[:port]`, nothing after the authority.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl {
    authority: Authority,
}

impl UpstreamUrl {
    /// A clap value parser.
    pub fn parse(text: &str) -> Result<UpstreamUrl, String> {
        let uri: http::Uri = text.parse().map_err(|e| format!("invalid URL {text:?}: {e}"))?;
        if uri.scheme() != Some(&Scheme::HTTP) {
            return Err(format!("invalid upstream {text:?}: only http:// URLs are supported"));
        }
        let authority = uri
            .authority()
            .cloned()
            .ok_or_else(|| format!("invalid upstream {text:?}: no host"))?;
        if authority.as_str().contains('@') {
            return Err(format!(
                "invalid upstream {text:?}: credentials in URLs are not supported"
            ));
        }
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(format!(
                "invalid upstream {text:?}: give only scheme, host and port (no path)"
            ));
        }
        Ok(UpstreamUrl { authority })
    }

    pub fn authority(&self) -> &Authority {
        &self.authority
    }

    /// `host:port` as Prometheus wants it in a file_sd `targets` list.
    pub fn host_port(&self) -> String {
        let port = self.authority.port_u16().unwrap_or(80);
        format!("{}:{port}", self.authority.host())
    }
}

impl fmt::Display for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

/// A readiness probe that failed, and whether anything answered at all.
#[derive(Debug, Clone)]
pub struct ProbeFailure {
    pub message: String,
    /// No connection could be opened: no process listens at the address.
    pub nothing_listening: bool,
}

impl fmt::Display for ProbeFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The last background health reading of an upstream.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// `None` until the first probe has answered.
    pub healthy: Option<bool>,
    pub checked_at: Option<time::OffsetDateTime>,
    pub error: Option<String>,
    /// The release the upstream said it runs in its last readiness answer.
    pub version: Option<String>,
    /// When the router saw this instance become ready (after nothing
    /// answered at its address, or with a new version); `None` when it was
    /// ready from the first look.
    pub ready_since: Option<time::OffsetDateTime>,
    /// Nothing answered the last probes (a connection error): the process
    /// is gone, and the next one to answer is a new instance. A probe
    /// answered not ready, or too slowly, is the same process.
    gone: bool,
}

pub struct Upstream {
    pub color: Color,
    pub url: UpstreamUrl,
    /// `url` as a span attribute value, shared rather than formatted per span.
    pub url_attribute: opentelemetry::StringValue,
    pub pool: Arc<Pool>,
    in_flight: AtomicUsize,
    in_flight_gauge: Gauge,
    /// Woken each time the in-flight count drops to zero.
    idle: Notify,
    state: Mutex<TargetState>,
    health: Mutex<Health>,
}

impl Upstream {
    pub fn new(
        color: Color,
        url: UpstreamUrl,
        connect_timeout: Duration,
        state: TargetState,
        in_flight_gauge: Gauge,
    ) -> Self {
        let pool = Arc::new(Pool::new(url.authority().clone(), connect_timeout));
        Upstream {
            color,
            url_attribute: opentelemetry::StringValue::from(std::sync::Arc::<str>::from(url.to_string())),
            url,
            pool,
            in_flight: AtomicUsize::new(0),
            in_flight_gauge,
            idle: Notify::new(),
            state: Mutex::new(state),
            health: Mutex::new(Health::default()),
        }
    }

    /// Counts a request as in flight until the returned guard drops.
    pub fn begin(self: &Arc<Self>) -> InFlight {
        // SeqCst pairs with the switch's store of the active color: either the
        // switch sees this request in flight, or the caller sees the new color.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.in_flight_gauge.inc();
        InFlight(Arc::clone(self))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Waits until no request is in flight; false when `timeout` ran out first.
    pub async fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.idle.notified();
            tokio::pin!(notified);
            // Registered before the check, so a drop to zero in between is not missed.
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }

    pub fn state(&self) -> TargetState {
        *self.state.lock()
    }

    /// Moves to `next` and logs the transition with the state it left.
    pub fn set_state(&self, next: TargetState, reason: &str) {
        let previous = std::mem::replace(&mut *self.state.lock(), next);
        if previous != next {
            tracing::info!(color = %self.color, from = %previous, to = %next, reason, "target state");
        }
    }

    pub fn health(&self) -> Health {
        self.health.lock().clone()
    }

    /// Records a probe result; returns the previous `healthy` value and
    /// whether the version changed (a redeployed color).
    pub fn record_health(&self, result: Result<Option<String>, ProbeFailure>) -> (Option<bool>, bool) {
        let now = time::OffsetDateTime::now_utc();
        let mut health = self.health.lock();
        let previous = health.healthy;
        health.healthy = Some(result.is_ok());
        health.checked_at = Some(now);
        let mut version_changed = false;
        match result {
            Ok(version) => {
                health.error = None;
                version_changed = previous == Some(true) && health.version != version;
                if health.gone || version_changed {
                    health.ready_since = Some(now);
                }
                health.gone = false;
                health.version = version;
            }
            Err(failure) => {
                health.gone |= failure.nothing_listening;
                health.error = Some(failure.message);
            }
        }
        (previous, version_changed)
    }

    /// The version of a readiness answer outside the background probe (a
    /// switch's checks); a new one means a new instance.
    pub fn record_version(&self, version: Option<String>) {
        let mut health = self.health.lock();
        if health.gone || (health.version.is_some() && health.version != version) {
            health.ready_since = Some(time::OffsetDateTime::now_utc());
            health.gone = false;
        }
        health.version = version;
    }

    /// The version the upstream last said it runs, or `unknown`.
    pub fn version(&self) -> String {
        self.health
            .lock()
            .version
            .clone()
            .unwrap_or_else(|| "unknown".to_owned())
    }
}

/// One in-flight request on an upstream.
pub struct InFlight(Arc<Upstream>);

impl InFlight {
    pub fn upstream(&self) -> &Arc<Upstream> {
        &self.0
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight_gauge.dec();
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_instance_is_one_that_replaced_a_gone_process_or_says_another_version() {
        let upstream = Upstream::new(
            Color::Green,
            UpstreamUrl::parse("http://backend-green:3000").expect("url"),
            Duration::from_secs(1),
            TargetState::Standby,
            Gauge::default(),
        );
        let ready_since = || upstream.health().ready_since;
        upstream.record_health(Ok(Some("1.0".into())));
        assert_eq!(ready_since(), None, "ready from the first look");
        // Not ready, or slow: the same process flapping.
        let failed = |message: &str, nothing_listening| {
            Err(ProbeFailure {
                message: message.to_owned(),
                nothing_listening,
            })
        };
        upstream.record_health(failed("/health/ready answered 503 Service Unavailable", false));
        upstream.record_health(failed("/health/ready did not answer within 1000 ms", false));
        upstream.record_health(Ok(Some("1.0".into())));
        assert_eq!(ready_since(), None, "a flap is not a new instance");
        // Nothing listening, then an answer: a new process.
        upstream.record_health(failed("cannot connect: connection refused", true));
        upstream.record_health(Ok(Some("1.0".into())));
        let restarted = ready_since().expect("a restart is a new instance");
        // Another version without a gap the probe saw: a new process too.
        std::thread::sleep(Duration::from_millis(5));
        let (_, changed) = upstream.record_health(Ok(Some("1.1".into())));
        assert!(changed);
        assert!(ready_since().expect("set") > restarted);
    }

    #[test]
    fn accepts_only_plain_http_base_urls() {
        let url = UpstreamUrl::parse("http://backend-blue:3000").expect("valid");
        assert_eq!(url.host_port(), "backend-blue:3000");
        assert_eq!(url.to_string(), "http://backend-blue:3000");
        assert_eq!(
            UpstreamUrl::parse("http://10.0.0.1/").expect("valid").host_port(),
            "10.0.0.1:80"
        );
        for bad in [
            "https://a:1",
            "backend:3000",
            "http://a:1/api",
            "http://u:p@a:1",
            "http://a:1?q",
            "",
            "http://",
        ] {
            assert!(UpstreamUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[tokio::test]
    async fn wait_idle_returns_when_the_last_request_ends_or_at_the_deadline() {
        let url = UpstreamUrl::parse("http://127.0.0.1:9").expect("valid");
        let upstream = Arc::new(Upstream::new(
            Color::Blue,
            url,
            Duration::from_secs(1),
            TargetState::Active,
            Gauge::default(),
        ));
        assert!(upstream.wait_idle(Duration::from_millis(10)).await);
        let guard = upstream.begin();
        assert!(!upstream.wait_idle(Duration::from_millis(20)).await);
        let waiter = {
            let upstream = Arc::clone(&upstream);
            tokio::spawn(async move { upstream.wait_idle(Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(guard);
        assert!(waiter.await.expect("join"));
        assert_eq!(upstream.in_flight(), 0);
    }
}
