//! `GET /_admin/cluster`: the cluster as its database sees it (nodes, leases, shards), and with
//! `?object=namespace/name` which node serves that object. `dohost cluster status` shows it.

use super::admin::{authorize, on_db};
use super::error::ApiError;
use super::state::AppState;
use crate::cluster::{Route, shard_of};
use crate::names::ObjectId;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// While a node leaves its cluster, every answer closes its connection: clients then reconnect
/// (to this node while it still listens, or to another) instead of reusing a connection it is
/// about to close, which could cut a request sent just then.
pub(super) async fn close_while_leaving(
    State(app): State<AppState>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let mut response = next.run(req).await;
    if app.cluster.as_ref().is_some_and(|c| c.is_leaving()) {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

#[derive(serde::Deserialize)]
pub(super) struct Which {
    /// `namespace/name`: the object whose owner to show.
    object: Option<String>,
}

pub(super) async fn status(
    State(app): State<AppState>,
    Query(which): Query<Which>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let Some(cluster) = app.cluster.clone() else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_a_cluster",
            "this host is not a node of a cluster (see `dohost serve --cluster`)",
        ));
    };
    let node = cluster.config().node.clone();
    let owner = which.object.map(|object| {
        let (namespace, name) = object.split_once('/').unwrap_or((&object, ""));
        let id = ObjectId::new(namespace, name);
        let route = match cluster.route(&id) {
            Route::Here { epoch } => {
                json!({ "node": node, "url": cluster.config().advertise, "epoch": epoch })
            }
            Route::There(url) => json!({ "url": url }),
            Route::Nowhere => json!(null),
        };
        json!({ "object": object, "shard": shard_of(&id), "served_by": route })
    });
    let status = on_db(move || cluster.status()).await?;
    let mut value = serde_json::to_value(status).unwrap_or_default();
    value["node"] = json!(node);
    if let Some(owner) = owner {
        value["object"] = owner;
    }
    Ok(axum::Json(value).into_response())
}
