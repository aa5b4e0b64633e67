//! HTTP: routing requests to objects, the admin API, and the JSON errors both answer with.
//!
//! - A request that an app's worker route matches goes to that worker, which sees the whole path;
//!   else `ANY /{namespace}/{object-name}/{rest...}` of a public class is delivered to the object,
//!   which sees `/{rest}` with the query kept (the longest match wins, see `objects`).
//! - `GET /_admin/namespaces`, `GET|PUT|POST /_admin/namespaces/{namespace}` (PUT and POST
//!   deploy), `GET /_admin/apps`, `GET|PUT|POST /_admin/apps/{app}` (an app deploy: JSON, see
//!   `admin::deploy_app`), `PUT /_admin/apps/{app}/secrets/{name}` and `GET /_admin/stats` need
//!   the admin token as `Authorization: Bearer <token>`.
//!   Namespaces can never start with `_`, so the two never meet.
//!
//! Every answer the host makes itself is JSON, `{"error": message, "code": code}`, including the
//! refusals of malformed requests: a request target over [`MAX_TARGET_BYTES`] (414), headers over
//! [`MAX_HEADER_BYTES`] (431), a path with invalid percent-encoding (400), a body that does not
//! arrive within the body timeout (408), a method a route does not take (405). Requests hyper
//! cannot parse at all (not HTTP, over 100 headers, a head over about 400 KiB, a target over
//! 64 KiB) are refused by hyper before they reach these routes, with the status alone (400, 431,
//! 414) and no body.
//!
//! The files: `objects` (delivery to objects), `websocket` (an upgraded socket's connection
//! task), `admin` (the admin API), `backup` (the snapshot route), `data` (objects' inventory
//! and storage, for operators), `metrics` (the Prometheus
//! exposition), `tail` (the live tail), `limits` (what a request may send), `error` (the JSON
//! errors).

mod admin;
mod backup;
mod cluster;
mod data;
mod error;
mod limits;
mod metrics;
mod objects;
mod state;
mod stream;
mod tail;
mod websocket;

pub(crate) use admin::apply_change;
pub use error::ApiError;
pub use limits::{BodyBudget, MAX_HEADER_BYTES, MAX_TARGET_BYTES};
pub use metrics::metrics_router;
pub use state::{AppState, ClientAddress};

use axum::Router;
use axum::http::{Method, StatusCode};
use axum::middleware;
use axum::routing::get;

/// The host's routes.
pub fn router(state: AppState) -> Router {
    let cluster = state.cluster.clone();
    let router = Router::new()
        .route("/_admin/namespaces", get(admin::list_namespaces))
        .route("/_admin/stats", get(admin::stats))
        .route("/_admin/cluster", get(cluster::status))
        // POST a call; GET one that asks for a WebSocket.
        .route(
            crate::cluster::CALL_PATH,
            axum::routing::post(cluster::call).get(cluster::call),
        )
        .route(
            crate::cluster::FORGET_PATH,
            axum::routing::post(cluster::forget_namespace),
        )
        .route("/_admin/metrics", get(metrics::admin_metrics))
        .route("/_admin/backup", get(backup::backup))
        .route("/_admin/tail", get(tail::tail))
        .route(
            "/_admin/namespaces/{namespace}",
            get(admin::show_namespace)
                .put(admin::deploy)
                .post(admin::deploy)
                .delete(admin::delete_namespace),
        )
        .route("/_admin/namespaces/{namespace}/objects", get(data::objects))
        .route("/_admin/", get(data::page))
        .route(
            "/_admin/namespaces/{namespace}/objects/{name}",
            get(data::object),
        )
        .route(
            "/_admin/namespaces/{namespace}/objects/{name}/storage",
            get(data::list).post(data::put_batch),
        )
        .route(
            "/_admin/namespaces/{namespace}/objects/{name}/alarm",
            axum::routing::post(data::run_alarm),
        )
        .route(
            "/_admin/namespaces/{namespace}/objects/{name}/evict",
            axum::routing::post(data::evict),
        )
        .route(
            "/_admin/namespaces/{namespace}/objects/{name}/storage/{*key}",
            get(data::get_key)
                .put(data::put_key)
                .delete(data::delete_key),
        )
        .route("/_admin/apps", get(admin::list_apps))
        .route(
            "/_admin/apps/{app}",
            get(admin::show_app)
                .put(admin::deploy_app)
                .post(admin::deploy_app),
        )
        .route(
            "/_admin/apps/{app}/secrets/{name}",
            axum::routing::put(admin::put_secret),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(objects::object_request)
        .layer(middleware::from_fn(limits::check_head));
    // A cluster's node only: a host on its own pays nothing for them.
    let router = match cluster {
        Some(cluster) => router
            .layer(middleware::from_fn_with_state(
                cluster.clone(),
                cluster::forward_admin_object,
            ))
            .layer(middleware::from_fn_with_state(
                cluster,
                cluster::close_while_leaving,
            )),
        None => router,
    };
    router.with_state(state)
}

/// An admin route asked with a method it does not take; axum adds the `Allow` header.
async fn method_not_allowed(method: Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take {method}"),
    )
}
