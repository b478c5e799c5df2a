//! The route table: every route of the API in one list ([`routes`]), and
//! the router built from it ([`router`]) with JSON 404/405 answers and the
//! request timing of [`admin::track`].
//!
//! Adding a route: one handler in the module that owns it ([`tokens`] or
//! [`admin`]), one `.add(...)` line in [`routes`], and the path documented
//! in `openapi/cellns.yaml` (a test fails when the two disagree).

use std::sync::Arc;

use axum::Router;
use axum::handler::Handler;
use axum::http::{Method, StatusCode};
use axum::routing::{MethodFilter, on};

use super::error::ApiError;
use super::state::App;
use super::{admin, tokens};

/// One row of the route table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteInfo {
    /// HTTP method.
    pub method: Method,
    /// Path (axum syntax, `{param}` as in OpenAPI).
    pub path: &'static str,
}

/// A router that remembers its routes, so the OpenAPI test can check that
/// every route is documented.
pub(super) struct Routes<S> {
    router: Router<S>,
    table: Vec<RouteInfo>,
}

impl<S: Clone + Send + Sync + 'static> Default for Routes<S> {
    fn default() -> Self {
        Self::new()
    }
}

impl<S: Clone + Send + Sync + 'static> Routes<S> {
    /// No routes yet.
    pub(super) fn new() -> Self {
        Self {
            router: Router::new(),
            table: Vec::new(),
        }
    }

    /// Adds `handler` for `method path`.
    pub(super) fn add<H, T>(mut self, method: Method, path: &'static str, handler: H) -> Self
    where
        H: Handler<T, S>,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method.clone())
            .unwrap_or_else(|_| panic!("route {method} {path}: not a routable method"));
        self.router = self.router.route(path, on(filter, handler));
        self.table.push(RouteInfo { method, path });
        self
    }
}

/// Every route of the API: one line a route, the handler in the module
/// that owns it.
pub(super) fn routes() -> Routes<Arc<App>> {
    Routes::new()
        .add(Method::POST, "/v1/tokens", tokens::issue_token)
        .add(Method::GET, "/.well-known/jwks.json", tokens::jwks)
        .add(Method::GET, "/openapi.yaml", tokens::openapi)
        .add(Method::GET, "/healthz", admin::healthz)
        .add(Method::GET, "/readyz", admin::readyz)
        .add(Method::GET, "/metrics", admin::metrics)
        .add(Method::GET, "/v1/map", admin::map_info)
        .add(Method::GET, "/v1/cells", admin::cells)
        .add(Method::PUT, "/v1/cells/{id}/status", admin::set_status)
        .add(Method::DELETE, "/v1/cells/{id}/status", admin::clear_status)
        .add(Method::GET, "/v1/tenants/{tenant}", admin::tenant)
        .add(Method::GET, "/v1/fleet", admin::fleet)
        .add(Method::GET, "/v1/dnssec", admin::dnssec)
}

/// The routes as `(method, path)`, for documentation checks.
pub fn route_table() -> Vec<RouteInfo> {
    routes().table
}

/// The router over `app`, with JSON 404/405 answers; every request's
/// latency is recorded (by route template and status).
pub(super) fn router(app: Arc<App>) -> Router {
    routes()
        .router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn(admin::track))
        .with_state(app)
}

async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route",
    )
}
