//! Where an upstream stands in the switch life cycle. Each transition is
//! logged with the state it left, so a switch can be followed in the logs.

use std::fmt;

/// The role of one color at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    /// Receives no new requests; the switch target once it passes its checks.
    Standby,
    /// A switch is checking its readiness.
    Checking,
    /// Receives every new request.
    Active,
    /// Was active; finishing its in-flight requests after a switch.
    Draining,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Standby => "standby",
            TargetState::Checking => "checking",
            TargetState::Active => "active",
            TargetState::Draining => "draining",
        }
    }
}

impl fmt::Display for TargetState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
