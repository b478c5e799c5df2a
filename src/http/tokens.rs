//! The token API: `POST /v1/tokens` (mint a token for a tenant), the JWKS
//! that verifies them (`GET /.well-known/jwks.json`), and the OpenAPI
//! document (`GET /openapi.yaml`).

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::callers::Scope;
use super::error::ApiError;
use super::state::App;
use crate::token::TokenRequest;

/// Largest accepted request body (token requests are a few hundred bytes).
const MAX_BODY_BYTES: usize = 16 * 1024;
/// `Cache-Control` of the JWKS: short, so a removed key stops verifying soon
/// after its file is removed, and a new key is seen quickly.
const JWKS_CACHE_CONTROL: &str = "public, max-age=60";
/// The OpenAPI document, served at `GET /openapi.yaml`.
const OPENAPI_YAML: &str = include_str!("../../openapi/cellns.yaml");

/// `GET /openapi.yaml`.
pub(super) async fn openapi() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "application/yaml"),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        OPENAPI_YAML,
    )
}

/// `GET /.well-known/jwks.json`: every key of the key directory.
pub(super) async fn jwks(State(app): State<Arc<App>>) -> Response {
    let body = app.issuer.keys().load().jwks_json().clone();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, JWKS_CACHE_CONTROL),
        ],
        body,
    )
        .into_response()
}

/// `POST /v1/tokens`: [`mint`], counted (tokens issued per cell, errors by
/// code). Per-request logs are at debug level, for throughput.
pub(super) async fn issue_token(
    State(app): State<Arc<App>>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let result = mint(&app, req).await;
    if let Err(e) = &result {
        crate::metrics::token_error(e.code);
    }
    result
}

/// Issues a token. Checks run in this order: caller (401), rate (429),
/// scope `tokens` (403), content type (415), size (413), JSON (400), then the request itself
/// (400/404/503), so nothing about tenants or the map is revealed to an
/// unauthenticated caller.
async fn mint(app: &App, req: axum::extract::Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    let headers = parts.headers;
    let caller = app.authorize(&headers, &parts.extensions, Scope::Tokens)?;
    if !is_json(&headers) {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let bytes = read_body(&headers, body).await?;
    let req: TokenRequest = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", e.to_string()))?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    // One view for the whole decision: cell, region and map version agree,
    // and agree with what DNS answers from the same view.
    let view = app.store.view();
    let issued = app.issuer.issue(&view, &req, now).map_err(|e| {
        tracing::debug!(caller = %caller.name, tenant = %req.tenant, error = %e, "token refused");
        ApiError::from(e)
    })?;
    tracing::debug!(caller = %caller.name, tenant = %req.tenant, cell = %issued.cell, "token issued");
    crate::metrics::token_issued(&issued.cell_id);
    // The cell stays pointed at until this token expires (`quiet_at`).
    app.store.quiet().token_issued(&issued.cell_id, issued.exp);
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        serde_json::to_vec(&issued).unwrap_or_default(),
    )
        .into_response())
}

/// `Content-Type: application/json`, parameters (charset) allowed.
pub(super) fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`] (by the declared
/// length up front, and while reading a body without one).
pub(super) async fn read_body(headers: &HeaderMap, body: Body) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|e| {
            let inner = e.into_inner();
            let mut src: Option<&(dyn std::error::Error + 'static)> = Some(inner.as_ref());
            while let Some(e) = src {
                if e.is::<http_body_util::LengthLimitError>() {
                    return too_large();
                }
                src = e.source();
            }
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_request",
                format!("cannot read the body: {inner}"),
            )
        })
}
