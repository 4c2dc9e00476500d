//! The dashboard's read-only JSON API.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::AppState;
use super::views::{BatchMemberView, BatchView, DeadLetterView, ResultView};
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

/// Most batches `/api/batches` lists: every active one, then the newest ended ones.
pub const MAX_LISTED_BATCHES: usize = 200;

/// Jobs of one batch shown per page.
pub const BATCH_PAGE_JOBS: u64 = 50;

/// Batches: the active ones, then the newest ended ones, up to [`MAX_LISTED_BATCHES`].
pub(super) async fn batches(State(state): State<Arc<AppState>>) -> ApiResult<Value> {
    let mut all = state
        .client
        .batches()
        .await
        .map_err(|e| ApiError::internal("list the batches", e))?;
    let total = all.len();
    // Active first, each group newest first.
    all.sort_by(|a, b| {
        b.active
            .cmp(&a.active)
            .then(b.created_at.cmp(&a.created_at))
    });
    all.truncate(MAX_LISTED_BATCHES);
    let listed: Vec<BatchView> = all.into_iter().map(BatchView::from).collect();
    Ok(Json(json!({ "total": total, "batches": listed })))
}

/// Which jobs of a batch to show.
#[derive(Debug, Deserialize)]
pub(super) struct BatchPage {
    #[serde(default)]
    from: u64,
}

/// One batch: its record and the ended status of [`BATCH_PAGE_JOBS`] of its jobs
/// from `?from=`.
pub(super) async fn batch(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    Query(page): Query<BatchPage>,
) -> ApiResult<Value> {
    if !jobbox::is_valid_batch_id(&id) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "not a batch id".to_string(),
        ));
    }
    let client = &state.client;
    let batch = client
        .batch(&id)
        .await
        .map_err(|e| ApiError::internal("read the batch", e))?
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("no batch {id}")))?;
    let from = page.from.min(batch.jobs);
    let to = from.saturating_add(BATCH_PAGE_JOBS).min(batch.jobs);
    let mut members = Vec::new();
    for n in from..to {
        let job_id = jobbox::batch_job_id(&id, n);
        let result = client
            .result(&job_id)
            .await
            .map_err(|e| ApiError::internal("read a batch job's result", e))?;
        members.push(BatchMemberView {
            job_id,
            status: result.as_ref().map(|r| r.status),
            error: result.and_then(|r| r.error),
        });
    }
    Ok(Json(json!({
        "batch": BatchView::from(batch),
        "from": from,
        "page_size": BATCH_PAGE_JOBS,
        "members": members,
    })))
}
