//! The dashboard's actions: replay a dead letter, cancel a job or a batch, roll a
//! handler back. Each needs the token (see [`super::Token`]).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::api::{ApiError, ApiResult};
use crate::registry::{RollbackOptions, rollback as roll_back};

fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.token.allows(headers) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::UNAUTHORIZED,
            "this action needs the dashboard token".to_string(),
        ))
    }
}

/// Cancels a job.
pub(super) async fn cancel(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Value> {
    authorize(&state, &headers)?;
    if !jobbox::is_valid_name(&id) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "not a job id".to_string(),
        ));
    }
    let outcome = state
        .client
        .cancel(&id)
        .await
        .map_err(|e| ApiError::internal("cancel the job", e))?;
    let said = match outcome {
        jobbox::CancelOutcome::Cancelled => "cancelled".to_string(),
        jobbox::CancelOutcome::Stopping => "stopping".to_string(),
        jobbox::CancelOutcome::AlreadyFinished(status) => format!("already {status}"),
    };
    tracing::info!(job_id = %id, outcome = %said, "dashboard: cancel");
    Ok(Json(json!({ "outcome": said })))
}

/// Cancels a batch.
pub(super) async fn cancel_batch(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> ApiResult<Value> {
    authorize(&state, &headers)?;
    if !jobbox::is_valid_batch_id(&id) {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "not a batch id".to_string(),
        ));
    }
    let batch = state.client.cancel_batch(&id).await.map_err(|e| match e {
        jobbox::ClientError::NotFound(what) => {
            ApiError(StatusCode::NOT_FOUND, format!("no {what}"))
        }
        e => ApiError::internal("cancel the batch", e),
    })?;
    let said = if batch.active {
        "cancelling"
    } else {
        "already ended"
    };
    tracing::info!(batch_id = %id, outcome = said, "dashboard: cancel batch");
    Ok(Json(json!({ "outcome": said, "status": batch.status })))
}

/// Replays the dead letter at stream sequence `sequence`.
pub(super) async fn replay(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(sequence): Path<u64>,
) -> ApiResult<Value> {
    authorize(&state, &headers)?;
    let letters = state
        .client
        .dead_letters(None)
        .await
        .map_err(|e| ApiError::internal("list the dead letters", e))?;
    let Some((_, letter)) = letters.into_iter().find(|(seq, _)| *seq == sequence) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no dead letter at sequence {sequence}"),
        ));
    };
    state
        .client
        .replay_dead_letter(sequence, &letter)
        .await
        .map_err(|e| ApiError::internal("replay the dead letter", e))?;
    tracing::info!(sequence, job_id = %letter.job.id, "dashboard: replayed a dead letter");
    Ok(Json(json!({ "replayed": letter.job.id })))
}

/// Points a job type's route back at its previous deploy.
pub(super) async fn rollback(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Path(job_type): Path<String>,
) -> ApiResult<Value> {
    authorize(&state, &headers)?;
    let options = RollbackOptions {
        to: None,
        deployed_by: Some("dashboard".to_string()),
    };
    let done = roll_back(&state.client, &job_type, options)
        .await
        .map_err(|e| ApiError(StatusCode::CONFLICT, format!("failed to roll back: {e}")))?;
    tracing::info!(%job_type, digest = %done.route.digest, "dashboard: rolled back");
    Ok(Json(
        json!({ "digest": done.route.digest, "version": done.route.version }),
    ))
}
