//! The router's own metrics, served on the admin listener's `/metrics`.
//!
//! The per-request series (every color × status class, every color × error
//! kind) are created up front and their handles kept, so the hot path is
//! an atomic add with no lock and no label hashing, and every series exists
//! from the first scrape (`rate()` works from the start).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use vigie_telemetry::http::latency_histogram;
use vigie_telemetry::Color;

use crate::error::ErrorKind;
use crate::guard_record::{CheckResult, RollbackReason};

/// Status classes of proxied responses, by hundreds.
pub const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabels {
    color: &'static str,
    status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    color: &'static str,
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ColorLabel {
    color: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SwitchLabels {
    from: &'static str,
    to: &'static str,
    result: &'static str,
}

/// The last successful switch, for dashboard annotations with versions.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LastSwitchLabels {
    /// `switch` (asked for) or `rollback` (made by the guard).
    kind: &'static str,
    from: &'static str,
    to: &'static str,
    from_version: String,
    to_version: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FileLabel {
    file: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

/// Handles of one color's series.
#[derive(Clone, Debug)]
struct ColorSeries {
    requests: [Counter; 5],
    duration: [Histogram; 5],
    errors: [Counter; 3],
    active: Gauge,
    in_flight: Gauge,
    healthy: Gauge,
}

#[derive(Clone, Debug)]
pub struct RouterMetrics {
    blue: ColorSeries,
    green: ColorSeries,
    switches: Family<SwitchLabels, Counter>,
    last_switch: Gauge<f64, AtomicU64>,
    last_switch_info: Family<LastSwitchLabels, Gauge>,
    file_errors: Family<FileLabel, Counter>,
    guard_checks: Family<ResultLabel, Counter>,
    guard_prechecks: Family<ResultLabel, Counter>,
    guard_rollbacks: Family<ReasonLabel, Counter>,
    guard_running: Gauge,
}

impl RouterMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<ClassLabels, Counter>::default();
        let duration = Family::<ClassLabels, Histogram>::new_with_constructor(latency_histogram);
        let errors = Family::<KindLabels, Counter>::default();
        let active = Family::<ColorLabel, Gauge>::default();
        let in_flight = Family::<ColorLabel, Gauge>::default();
        let healthy = Family::<ColorLabel, Gauge>::default();
        let series = |color: Color| {
            let color = color.as_str();
            let class = |i: usize| ClassLabels {
                color,
                status_class: STATUS_CLASSES[i],
            };
            let kind = |k: ErrorKind| KindLabels {
                color,
                kind: k.as_str(),
            };
            ColorSeries {
                requests: std::array::from_fn(|i| requests.get_or_create(&class(i)).clone()),
                duration: std::array::from_fn(|i| duration.get_or_create(&class(i)).clone()),
                errors: ErrorKind::ALL.map(|k| errors.get_or_create(&kind(k)).clone()),
                active: active.get_or_create(&ColorLabel { color }).clone(),
                in_flight: in_flight.get_or_create(&ColorLabel { color }).clone(),
                healthy: healthy.get_or_create(&ColorLabel { color }).clone(),
            }
        };
        let metrics = RouterMetrics {
            blue: series(Color::Blue),
            green: series(Color::Green),
            switches: Family::default(),
            last_switch: Gauge::default(),
            last_switch_info: Family::default(),
            file_errors: Family::default(),
            guard_checks: Family::default(),
            guard_prechecks: Family::default(),
            guard_rollbacks: Family::default(),
            guard_running: Gauge::default(),
        };
        registry.register(
            "vigie_router_requests",
            "Requests proxied, by color and status class",
            requests,
        );
        registry.register_with_unit(
            "vigie_router_request_duration",
            "Time from receiving a request to the end of its response",
            Unit::Seconds,
            duration,
        );
        registry.register(
            "vigie_router_upstream_errors",
            "Requests that got no response from their upstream, by kind",
            errors,
        );
        registry.register(
            "vigie_router_active_color",
            "1 for the color receiving new requests, else 0",
            active,
        );
        registry.register(
            "vigie_router_in_flight_requests",
            "Requests being proxied, by color",
            in_flight,
        );
        registry.register(
            "vigie_router_upstream_healthy",
            "Last background readiness check of each color: 1 ready, 0 not",
            healthy,
        );
        // Every possible outcome starts at 0, so that `increase()` sees the
        // first refusal (a series born at 1 shows no increase).
        for from in Color::ALL {
            for to in Color::ALL {
                let results: &[&'static str] = if from == to { &["noop"] } else { &["ok", "refused"] };
                for result in results {
                    let _ = metrics.switches.get_or_create(&SwitchLabels {
                        from: from.as_str(),
                        to: to.as_str(),
                        result,
                    });
                }
            }
        }
        registry.register(
            "vigie_router_switches",
            "Switch requests, by from, to and result",
            metrics.switches.clone(),
        );
        registry.register_with_unit(
            "vigie_router_last_switch_timestamp",
            "Unix time of the last successful switch (0: none yet)",
            Unit::Seconds,
            metrics.last_switch.clone(),
        );
        registry.register(
            "vigie_router_last_switch_info",
            "The last successful switch since the router started (kind switch or rollback, colors, versions), always 1",
            metrics.last_switch_info.clone(),
        );
        registry.register(
            "vigie_router_file_write_errors",
            "Failed writes of the state or targets file",
            metrics.file_errors.clone(),
        );
        metrics.register_guard(registry);
        metrics
    }

    /// The switch guard's series, every label value created at 0.
    fn register_guard(&self, registry: &mut Registry) {
        for result in CheckResult::ALL {
            let label = ResultLabel {
                result: result.as_str(),
            };
            let _ = self.guard_checks.get_or_create(&label);
            let _ = self.guard_prechecks.get_or_create(&label);
        }
        for reason in RollbackReason::ALL {
            let _ = self.guard_rollbacks.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        registry.register(
            "vigie_router_guard_checks",
            "Checks of the new color during a guarded switch's window, by result",
            self.guard_checks.clone(),
        );
        registry.register(
            "vigie_router_guard_prechecks",
            "Checks of the standby color before a guarded switch, by result",
            self.guard_prechecks.clone(),
        );
        registry.register(
            "vigie_router_guard_rollbacks",
            "Switches back made by the guard, by reason",
            self.guard_rollbacks.clone(),
        );
        registry.register(
            "vigie_router_guard_running",
            "1 while a guard watches the color switched to, else 0",
            self.guard_running.clone(),
        );
    }

    fn color(&self, color: Color) -> &ColorSeries {
        match color {
            Color::Blue => &self.blue,
            Color::Green => &self.green,
        }
    }

    pub fn observe_request(&self, color: Color, status: u16, seconds: f64) {
        let class = usize::from((status / 100).clamp(1, 5) - 1);
        let series = self.color(color);
        series.requests[class].inc();
        series.duration[class].observe(seconds);
    }

    pub fn upstream_error(&self, color: Color, kind: ErrorKind) {
        self.color(color).errors[kind.index()].inc();
    }

    pub fn set_active(&self, active: Color) {
        for color in Color::ALL {
            self.color(color).active.set(i64::from(color == active));
        }
    }

    pub fn in_flight_gauge(&self, color: Color) -> Gauge {
        self.color(color).in_flight.clone()
    }

    pub fn set_healthy(&self, color: Color, healthy: bool) {
        self.color(color).healthy.set(i64::from(healthy));
    }

    pub fn switch(&self, from: Color, to: Color, result: &'static str) {
        self.switches
            .get_or_create(&SwitchLabels {
                from: from.as_str(),
                to: to.as_str(),
                result,
            })
            .inc();
    }

    /// The time of the last switch, as restored from the state file.
    pub fn set_last_switch_time(&self, unix_seconds: f64) {
        self.last_switch.set(unix_seconds);
    }

    /// Records a successful switch: its time and its one info series.
    pub fn set_last_switch(&self, unix_seconds: f64, kind: &'static str, from: (Color, String), to: (Color, String)) {
        self.last_switch.set(unix_seconds);
        self.last_switch_info.clear();
        self.last_switch_info
            .get_or_create(&LastSwitchLabels {
                kind,
                from: from.0.as_str(),
                to: to.0.as_str(),
                from_version: from.1,
                to_version: to.1,
            })
            .set(1);
    }

    pub fn file_write_error(&self, file: &'static str) {
        self.file_errors.get_or_create(&FileLabel { file }).inc();
    }

    pub fn guard_check(&self, result: CheckResult) {
        self.guard_checks
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn guard_precheck(&self, result: CheckResult) {
        self.guard_prechecks
            .get_or_create(&ResultLabel {
                result: result.as_str(),
            })
            .inc();
    }

    pub fn guard_rollback(&self, reason: RollbackReason) {
        self.guard_rollbacks
            .get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            })
            .inc();
    }

    pub fn set_guard_running(&self, running: bool) {
        self.guard_running.set(i64::from(running));
    }
}
