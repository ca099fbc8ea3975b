//! `GET /healthz` (the process answers), `GET /readyz` (the database answers a query and Vault
//! is healthy; 503 with a generic body otherwise, the cause logged), `GET /metrics`.

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Json;

use crate::db;
use crate::http::error::ApiError;
use crate::state::AppState;

/// `GET /healthz`.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// `GET /readyz`.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if let Err(error) = sqlx::query_scalar::<_, i64>("SELECT 1")
        .fetch_one(state.db.pool())
        .await
    {
        tracing::warn!(error = %error, "not ready: the database does not answer");
        return Err(ApiError::Unavailable);
    }
    if let Err(error) = state.vault.health().await {
        tracing::warn!(error = %error, "not ready: vault is not healthy");
        return Err(ApiError::Unavailable);
    }
    Ok(Json(serde_json::json!({ "status": "ready" })))
}

/// `GET /metrics`: Prometheus text format.
pub async fn metrics(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let nodes = db::nodes::count_by_status(&state.db).await?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.render(&nodes),
    ))
}
