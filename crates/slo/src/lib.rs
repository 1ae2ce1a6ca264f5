//! Service level objectives, declared once in a small YAML file
//! (`stack/slo.yaml`, format in docs/concepts.md) and turned into the
//! Prometheus recording and alerting rules that measure them: SLI error
//! ratios over the multi-window set of Google's SRE workbook, burn rates,
//! the error budget left over the period, and multi-window, multi-burn-rate
//! alerts (page on a fast burn, ticket on a slow one), per color and
//! overall. Names follow the `slo:*` conventions of Sloth and Pyrra.
#![forbid(unsafe_code)]

mod rules;
mod spec;

pub use rules::{le_matcher, render, WINDOWS};
pub use spec::{Kind, Objective, Slos, SpecError};

/// The burn rate that pages (SRE workbook: 2% of a 30-day budget in one
/// hour); the switch guard judges by it too.
pub const FAST_BURN: f64 = 14.4;
