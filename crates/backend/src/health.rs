//! Liveness (the process serves) and readiness (the database answers and
//! the service is not shutting down).

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::error::AppError;
use crate::AppState;

pub async fn live() -> Json<Value> {
    Json(json!({ "status": "live" }))
}

pub async fn ready(State(state): State<AppState>) -> Result<Json<Value>, AppError> {
    if state.draining.load(Ordering::Acquire) {
        return Err(AppError::Unavailable("shutting down".into()));
    }
    if let Err(e) = state.db.ping().await {
        tracing::warn!(error = &e as &dyn std::error::Error, "readiness check failed");
        return Err(AppError::Unavailable("database does not answer".into()));
    }
    // The version lets the router show which release each color runs.
    Ok(Json(
        json!({ "status": "ready", "version": crate::VERSION, "color": state.color }),
    ))
}
