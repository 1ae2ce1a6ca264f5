//! Fault injection for demos and rollback tests: a share of `/api/*`
//! requests fail with a real 500, and every one can be delayed.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::AppError;

#[derive(Debug, Clone, Copy, Default)]
pub struct Faults {
    pub error_rate: f64,
    pub latency: Duration,
}

impl Faults {
    pub fn enabled(&self) -> bool {
        self.error_rate > 0.0 || !self.latency.is_zero()
    }
}

pub async fn inject(State(faults): State<Faults>, request: Request, next: Next) -> Response {
    if !faults.latency.is_zero() {
        tokio::time::sleep(faults.latency).await;
    }
    if faults.error_rate > 0.0 && fastrand::f64() < faults.error_rate {
        return AppError::InjectedFault.into_response();
    }
    next.run(request).await
}
