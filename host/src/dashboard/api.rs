//! The dashboard's read-only JSON API.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

use super::AppState;
use super::views::{DeadLetterView, ResultView};
use crate::registry as versions;

/// An API error: a status and a message (shown by the page as text).
#[derive(Debug)]
pub(crate) struct ApiError(pub StatusCode, pub String);

impl ApiError {
    pub fn internal(what: &str, error: impl std::fmt::Display) -> Self {
        Self(
            StatusCode::BAD_GATEWAY,
            format!(
                "failed to {what}: {}",
                crate::causes::error_line(&anyhow::anyhow!("{error}"))
            ),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<Json<T>, ApiError>;

/// Queues with their counts and recent throughput, and the live workers.
pub(super) async fn overview(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    let client = &state.client;
    let queues = client
        .queues()
        .await
        .map_err(|e| ApiError::internal("list the queues", e))?;
    let mut stats = Vec::with_capacity(queues.len());
    for queue in &queues {
        stats.push(
            client
                .queue_stats(queue)
                .await
                .map_err(|e| ApiError::internal("read queue stats", e))?,
        );
    }
    let workers = client
        .workers()
        .await
        .map_err(|e| ApiError::internal("list the workers", e))?;
    Ok(Json(json!({
        "now": chrono::Utc::now(),
        "queues": stats,
        "throughput": state.live.throughput(),
        "workers": workers,
    })))
}

/// One job: its state, its event trail and its result.
pub(super) async fn job(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> ApiResult<Value> {
    if !jobbox::is_valid_name(&id) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "not a job id".to_string(),
        ));
    }
    let client = &state.client;
    let job_state = client
        .job_state(&id)
        .await
        .map_err(|e| ApiError::internal("read the job's state", e))?;
    let events = client
        .job_events(&id)
        .await
        .map_err(|e| ApiError::internal("read the job's events", e))?;
    let result = client
        .result(&id)
        .await
        .map_err(|e| ApiError::internal("read the job's result", e))?;
    if job_state.is_none() && events.is_empty() && result.is_none() {
        return Err(ApiError(StatusCode::NOT_FOUND, format!("no job {id}")));
    }
    Ok(Json(json!({
        "id": id,
        "state": job_state,
        "events": events,
        "result": result.map(ResultView::from),
    })))
}

/// Recent FAILED and DEAD_LETTERED events (since the dashboard started).
pub(super) async fn failures(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(json!({ "failures": state.live.failures() }))
}

#[derive(Debug, Serialize)]
struct HandlerView {
    job_type: String,
    versions: Vec<versions::RouteVersion>,
}

/// Every routed job type with its deploy history.
pub(super) async fn handlers(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    let client = &state.client;
    let routes = versions::current_routes(client)
        .await
        .map_err(|e| ApiError::internal("list the routes", e))?;
    let mut handlers = Vec::with_capacity(routes.len());
    for (_, route) in routes {
        let history = versions::history(client, &route.job_type)
            .await
            .map_err(|e| ApiError::internal("read a route's history", e))?;
        handlers.push(HandlerView {
            job_type: route.job_type,
            versions: history,
        });
    }
    Ok(Json(json!({ "handlers": handlers })))
}

/// The dead-letter queue, oldest first.
pub(super) async fn dead_letters(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    let letters = state
        .client
        .dead_letters(None)
        .await
        .map_err(|e| ApiError::internal("list the dead letters", e))?;
    let letters: Vec<_> = letters
        .into_iter()
        .map(|(sequence, letter)| DeadLetterView::new(sequence, letter))
        .collect();
    Ok(Json(json!({ "dead_letters": letters })))
}
