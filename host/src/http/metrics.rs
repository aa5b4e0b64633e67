//! The Prometheus exposition: `/_admin/metrics` behind the admin token, and `/metrics` on the
//! separate `--metrics-listen` address, which needs none (bind it where only the scraper reaches).

use super::admin::authorize;
use super::error::ApiError;
use super::state::AppState;
use crate::metrics::{Now, render};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

/// `/_admin/metrics` on the host's own address.
pub(super) async fn admin_metrics(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    Ok(exposition(&app))
}

/// The router of `--metrics-listen`: `/metrics` alone, without a token.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route(
            "/metrics",
            get(|State(app): State<AppState>| async move { exposition(&app) }),
        )
        .with_state(state)
}

fn exposition(app: &AppState) -> Response {
    let namespaces: Vec<String> = app
        .registry
        .list()
        .into_iter()
        .map(|i| i.namespace)
        .collect();
    let objects = &app.objects;
    let committer = objects.committer();
    let now = Now {
        live_instances: objects.live_instances(),
        awake_objects: objects.awake_objects(),
        instance_memory_bytes: objects.instance_memory(),
        open_sockets: app.sockets.open_count(),
        socket_bytes_waiting: app.sockets.bytes_waiting(),
        pending_alarms: app.alarms.pending(),
        overloaded: objects.overloaded_count(),
        failed_commits: committer.failed_commits(),
        commits: committer.commits(),
        commit_seconds: committer.batch_seconds(),
        storage_full: committer.storage_full(),
        fenced_commits: committer.fenced_commits(),
        cluster: app.cluster.as_ref().map(|c| c.now()),
        storage_bytes: namespaces
            .iter()
            .map(|ns| (ns.clone(), objects.stored_bytes(ns)))
            .collect(),
        background: namespaces
            .iter()
            .filter(|ns| objects.background_left(ns).is_some())
            .cloned()
            .collect(),
        outbound: objects.runtime().outbound_requests(),
    };
    let mut response = render(objects.metrics(), &now).into_response();
    // The content type Prometheus asks for and parses as text exposition 0.0.4.
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}
