//! The JSON error body of SPEC §5: `{"error":{"code","message","request_id"}}`.
//!
//! Invariant: 5xx messages are opaque (the cause goes to the log with the request id),
//! and no message carries a token, key or record content.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde_json::json;

/// The stable machine-readable error codes of SPEC §9; serialises to the same strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: malformed or invalid input.
    InvalidRequest,
    /// 400: a governance approval whose approver is unknown or signature invalid.
    InvalidSignature,
    /// 400: a query asking for more epsilon than the per-query cap.
    EpsilonOverCap,
    /// 401: no valid bearer token.
    Unauthorized,
    /// 403: the token may not do this.
    Forbidden,
    /// 403: the tenant's privacy budget is spent.
    PrivacyBudgetExhausted,
    /// 404.
    NotFound,
    /// 409.
    Conflict,
    /// 413.
    PayloadTooLarge,
    /// 500, opaque.
    Internal,
    /// 503: HSM or TPM unavailable.
    BackendUnavailable,
    /// 503: the integrity alarm is raised.
    IntegrityAlarm,
}

impl ErrorCode {
    /// The wire string.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidSignature => "invalid_signature",
            Self::EpsilonOverCap => "epsilon_over_cap",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::PrivacyBudgetExhausted => "privacy_budget_exhausted",
            Self::NotFound => "not_found",
            Self::Conflict => "conflict",
            Self::PayloadTooLarge => "payload_too_large",
            Self::Internal => "internal",
            Self::BackendUnavailable => "backend_unavailable",
            Self::IntegrityAlarm => "integrity_alarm",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An error answer.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: ErrorCode,
    /// Human-readable message.
    pub message: String,
    /// Request id (attached by the request context).
    pub request_id: String,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            request_id: String::new(),
        }
    }
    /// 400 `invalid_request`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidRequest, message)
    }
    /// 401 `unauthorized`.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "a valid bearer token is required",
        )
    }
    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, message)
    }
    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorCode::NotFound, message)
    }
    /// 409 `conflict`.
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, ErrorCode::Conflict, message)
    }
    /// 400 `invalid_signature`: a governance approval whose approver is unknown or whose
    /// signature does not verify.
    pub fn invalid_signature(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidSignature, message)
    }
    /// 413 `payload_too_large`.
    pub fn too_large(limit: usize) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::PayloadTooLarge,
            format!("request body exceeds {limit} bytes"),
        )
    }
    /// 500 `internal`, opaque.
    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            "internal error; see the server log for this request id",
        )
    }
    /// 503 `backend_unavailable`.
    pub fn backend_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::BackendUnavailable,
            "the HSM or TPM is unavailable",
        )
    }
    /// 503 `integrity_alarm`.
    pub fn integrity_alarm(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, ErrorCode::IntegrityAlarm, message)
    }
    /// Attach the request id.
    pub fn with_request_id(mut self, id: &str) -> Self {
        self.request_id = id.to_owned();
        self
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}: {}", self.status.as_u16(), self.code, self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }
    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            response.insert_header(("www-authenticate", "Bearer realm=\"strongroom\""));
        }
        response.json(json!({
            "error": {"code": self.code.as_str(), "message": self.message, "request_id": self.request_id}
        }))
    }
}
