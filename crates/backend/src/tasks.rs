//! The tasks resource: `/api/tasks` and `/api/tasks/{id}`.

use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;

use crate::db::Task;
use crate::error::{ApiJson, AppError};
use crate::AppState;

pub const MAX_TITLE_CHARS: usize = 200;
const DEFAULT_LIMIT: u32 = 50;
const MAX_LIMIT: u32 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<u32>,
    offset: Option<u32>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTask {
    title: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskPatch {
    title: Option<String>,
    done: Option<bool>,
}

fn valid_title(title: &str) -> Result<String, AppError> {
    let trimmed = title.trim();
    if trimmed.is_empty() {
        return Err(AppError::Validation("title must not be empty".into()));
    }
    if trimmed.chars().count() > MAX_TITLE_CHARS {
        return Err(AppError::Validation(format!(
            "title must be at most {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(trimmed.to_owned())
}

fn task_id(path: Result<Path<i64>, axum::extract::rejection::PathRejection>) -> Result<i64, AppError> {
    let Path(id) = path?;
    Ok(id)
}

fn not_found(id: i64) -> AppError {
    AppError::NotFound(format!("no task with id {id}"))
}

pub async fn list(
    State(state): State<AppState>,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<Task>>, AppError> {
    let Query(query) = query?;
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(AppError::Validation(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    Ok(Json(state.db.list(limit, query.offset.unwrap_or(0)).await?))
}

pub async fn create(State(state): State<AppState>, ApiJson(new): ApiJson<NewTask>) -> Result<Response, AppError> {
    let task = state.db.create(valid_title(&new.title)?).await?;
    let location = format!("/api/tasks/{}", task.id);
    Ok((StatusCode::CREATED, [(header::LOCATION, location)], Json(task)).into_response())
}

pub async fn get(
    State(state): State<AppState>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<Json<Task>, AppError> {
    let id = task_id(id)?;
    state.db.get(id).await?.map(Json).ok_or_else(|| not_found(id))
}

pub async fn update(
    State(state): State<AppState>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
    ApiJson(patch): ApiJson<TaskPatch>,
) -> Result<Json<Task>, AppError> {
    let id = task_id(id)?;
    if patch.title.is_none() && patch.done.is_none() {
        return Err(AppError::Validation("give at least one of title, done".into()));
    }
    let title = patch.title.as_deref().map(valid_title).transpose()?;
    state
        .db
        .update(id, title, patch.done)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

pub async fn delete(
    State(state): State<AppState>,
    id: Result<Path<i64>, axum::extract::rejection::PathRejection>,
) -> Result<StatusCode, AppError> {
    let id = task_id(id)?;
    if state.db.delete(id).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(id))
    }
}
