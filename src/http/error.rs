//! The JSON error format of the API: [`ApiError`], and how errors from the
//! rest of the server map onto it.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::token::issue::IssueError;

/// An API error: a status and `{"error": {"code", "message"}}`. The codes
/// are stable (documented in openapi/cellns.yaml); messages are for people.
#[derive(Debug)]
pub(super) struct ApiError {
    /// HTTP status.
    pub(super) status: StatusCode,
    /// Stable machine-readable code.
    pub(super) code: &'static str,
    /// Human explanation.
    pub(super) message: String,
    /// `Retry-After` seconds (429).
    retry_after: Option<u64>,
    /// `WWW-Authenticate` value (401).
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            www_authenticate: None,
        }
    }

    /// A 401 with the `WWW-Authenticate` challenge `challenge`.
    pub(super) fn unauthorized(code: &'static str, message: &str, challenge: &'static str) -> Self {
        Self {
            www_authenticate: Some(challenge),
            ..Self::new(StatusCode::UNAUTHORIZED, code, message)
        }
    }

    /// The same error, answered with `Retry-After: secs`.
    pub(super) fn with_retry_after(self, secs: u64) -> Self {
        Self {
            retry_after: Some(secs),
            ..self
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        #[derive(Serialize)]
        struct Inner<'a> {
            code: &'a str,
            message: &'a str,
        }
        #[derive(Serialize)]
        struct Outer<'a> {
            error: Inner<'a>,
        }
        let body = serde_json::to_vec(&Outer {
            error: Inner {
                code: self.code,
                message: &self.message,
            },
        })
        .unwrap_or_default();
        let mut resp = (
            self.status,
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            body,
        )
            .into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if let Some(c) = self.www_authenticate {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        let (status, code) = match &e {
            IssueError::InvalidTenant(_) => (StatusCode::BAD_REQUEST, "invalid_tenant"),
            IssueError::UnknownTenant(_) => (StatusCode::NOT_FOUND, "unknown_tenant"),
            IssueError::InvalidTtl { .. } => (StatusCode::BAD_REQUEST, "invalid_ttl"),
            IssueError::InvalidSubject => (StatusCode::BAD_REQUEST, "invalid_subject"),
            IssueError::InvalidClaims => (StatusCode::BAD_REQUEST, "invalid_claims"),
            IssueError::NoSigningKey => (StatusCode::SERVICE_UNAVAILABLE, "no_signing_key"),
        };
        Self::new(status, code, e.to_string())
    }
}
