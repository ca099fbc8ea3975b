//! [`ApiError`]: every refusal and failure of the HTTP API, as JSON `{"error": "..."}`.
//!
//! 4xx bodies say what was wrong (never quoting a secret); 401 and 403 stay generic so that an
//! anonymous caller learns nothing about keys or nodes; 5xx bodies are generic and the real
//! error is logged once, here.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::db::DbError;
use crate::service::admin::AdminError;
use crate::service::catalog::CatalogError;
use crate::service::enroll::EnrollError;

/// An API error.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400, with what to fix.
    #[error("{0}")]
    BadRequest(String),
    /// 401: no credentials, or credentials that do not verify.
    #[error("authentication required")]
    Unauthorized,
    /// 403: authenticated, but not allowed.
    #[error("forbidden")]
    Forbidden,
    /// 403 with a reason the caller may see (enrollment of a key that cannot be used).
    #[error("{0}")]
    ForbiddenBecause(&'static str),
    /// 404.
    #[error("{0}")]
    NotFound(String),
    /// 409.
    #[error("{0}")]
    Conflict(String),
    /// 413.
    #[error("request body is over the limit of {0} bytes")]
    PayloadTooLarge(usize),
    /// 429 with Retry-After.
    #[error("too many requests; retry later")]
    TooManyRequests {
        /// Seconds.
        retry_after: u64,
    },
    /// 503 with a generic body.
    #[error("service unavailable")]
    Unavailable,
    /// 500; logged, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match &self {
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden | ApiError::ForbiddenBecause(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(error) => {
                tracing::error!(error = format!("{error:#}"), "request failed");
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        let body = serde_json::json!({ "error": self.to_string() });
        let mut response = (status, axum::Json(body)).into_response();
        if let ApiError::TooManyRequests { retry_after } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after.to_string())
                    .unwrap_or(HeaderValue::from_static("5")),
            );
        }
        response
    }
}

impl From<DbError> for ApiError {
    fn from(error: DbError) -> ApiError {
        ApiError::Internal(error.into())
    }
}

impl From<CatalogError> for ApiError {
    fn from(error: CatalogError) -> ApiError {
        match error {
            CatalogError::Db(error) => error.into(),
            other => ApiError::Internal(other.into()),
        }
    }
}

impl From<AdminError> for ApiError {
    fn from(error: AdminError) -> ApiError {
        match error {
            AdminError::NotFound { .. } => ApiError::NotFound(error.to_string()),
            AdminError::Conflict(message) => ApiError::Conflict(message),
            AdminError::Invalid(message) => ApiError::BadRequest(message),
            AdminError::Db(error) => error.into(),
        }
    }
}

impl From<EnrollError> for ApiError {
    fn from(error: EnrollError) -> ApiError {
        match error {
            EnrollError::BadRequest(message) => ApiError::BadRequest(message),
            EnrollError::Unsigned => ApiError::Unauthorized,
            EnrollError::TokenRefused => ApiError::ForbiddenBecause(
                "bootstrap token refused: unknown, revoked, expired, spent, or not valid for this hostname",
            ),
            EnrollError::RateLimited { retry_after } => ApiError::TooManyRequests { retry_after },
            EnrollError::Forbidden(reason) => ApiError::ForbiddenBecause(reason),
            EnrollError::Db(error) => error.into(),
        }
    }
}
