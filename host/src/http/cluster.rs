//! `GET /_admin/cluster`: the cluster as its database sees it (nodes, leases, shards), and with
//! `?object=namespace/name` which node serves that object. `dohost cluster status` shows it.

use super::admin::{
    authorize, forget_refused, namespace_param, objects_busy, on_db, settle_namespace,
    stored_objects,
};
use super::error::ApiError;
use super::state::AppState;
use crate::cluster::{
    CALL_HEADER, Cluster, FAILED_HEADER, FORWARDED, ForwardedCall, Route, SECRET_HEADER,
    STREAM_HEADER, failed_header, forward, shard_of,
};
use crate::names::ObjectId;
use crate::registry::ForgetError;
use crate::sockets::{Handback, Kind};
use axum::extract::FromRequestParts;
use axum::extract::rejection::PathRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;

/// While a node leaves its cluster, every answer closes its connection: clients then reconnect
/// (to this node while it still listens, or to another) instead of reusing a connection it is
/// about to close, which could cut a request sent just then.
pub(super) async fn close_while_leaving(
    State(cluster): State<Arc<Cluster>>,
    req: axum::extract::Request,
    next: Next,
) -> Response {
    let mut response = next.run(req).await;
    // Not a 101: its connection is the socket now.
    let upgraded = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if !upgraded && cluster.is_leaving() {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// In a cluster, an admin request about one object (its storage, alarm, eviction) goes to the
/// node that serves the object, like the object's own requests: the nodes share the admin token.
pub(super) async fn forward_admin_object(
    State(cluster): State<Arc<Cluster>>,
    mut req: axum::extract::Request,
    next: Next,
) -> Response {
    let Some((namespace, name)) = admin_object(req.uri().path()) else {
        return next.run(req).await;
    };
    let secret = req.headers_mut().remove(SECRET_HEADER);
    req.headers_mut().remove(FORWARDED);
    if cluster.is_node(secret.as_ref().and_then(|v| v.to_str().ok())) {
        // Forwarded by a node: served here, whoever owns it now.
        return next.run(req).await;
    }
    match cluster.route(&ObjectId::new(&namespace, &name)) {
        Route::There(node) => {
            cluster.count_forwarded();
            let config = cluster.config();
            let id = ObjectId::new(&namespace, &name);
            let forwarded = tokio::select! {
                answer = forward(&node, req, &config.secret, &config.node, None) => answer,
                () = cluster.until_moved(&id, &node) => Err(super::objects::stopped_answering(&node)),
            };
            forwarded.unwrap_or_else(|(status, message)| {
                ApiError::new(status, "moved", message).into_response()
            })
        }
        Route::Here { .. } | Route::Nowhere => next.run(req).await,
    }
}

/// Refuses a request that does not carry the cluster's secret: only nodes ask for these.
fn from_a_node(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let secret = headers.get(SECRET_HEADER).and_then(|v| v.to_str().ok());
    if app.cluster.as_ref().is_some_and(|c| c.is_node(secret)) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "only the cluster's nodes make requests here",
        ))
    }
}

/// `POST /_cluster/namespaces/{namespace}/forget`: another node is deleting `namespace`. This node
/// stops serving it and settles its objects here before their data goes (`cluster::namespaces`).
pub(super) async fn forget_namespace(
    State(app): State<AppState>,
    namespace: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    from_a_node(&app, &headers)?;
    let namespace = namespace_param(namespace)?;
    // Not deployed here yet is fine: there is nothing of it to settle.
    match app.registry.forget(&namespace) {
        Ok(_) | Err(ForgetError::Unknown(_)) => {}
        Err(e) => return Err(forget_refused(e)),
    }
    let stored = stored_objects(&app, &namespace).await?;
    if !settle_namespace(&app, &namespace, &stored).await {
        return Err(objects_busy(
            "some of its objects were still busy after 30 s",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// The namespace and object an admin path is about: `/_admin/namespaces/{ns}/objects/{name}...`.
fn admin_object(path: &str) -> Option<(String, String)> {
    let rest = path.strip_prefix("/_admin/namespaces/")?;
    let (namespace, rest) = rest.split_once("/objects/")?;
    let name = rest.split('/').next().filter(|n| !n.is_empty())?;
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    };
    Some((decode(namespace)?, decode(name)?))
}

/// `POST /_cluster/call`: a stub call another node forwarded (see `cluster::calls`). Only a node,
/// with the cluster's secret, may make it.
pub(super) async fn call(
    State(app): State<AppState>,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    from_a_node(&app, &parts.headers)?;
    let call = ForwardedCall::from_header(parts.headers.get(CALL_HEADER))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_call", e))?;
    let upgrade = if super::objects::wants_websocket(&parts.headers) {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_upgrade", e.body_text()))?;
        Some(upgrade)
    } else {
        None
    };
    let (body, _share) = app.read_object_body(body, &parts.headers).await?;
    let (namespace, name) = (call.namespace.clone(), call.name.clone());
    let (chain, request) = call.into_parts(body);
    let fetched = app
        .objects
        .forwarded_call(&namespace, &name, chain, request, upgrade.is_some())
        .await;
    let fetched = match fetched {
        Ok(fetched) => fetched,
        Err(e) => {
            let mut failed = StatusCode::BAD_GATEWAY.into_response();
            failed
                .headers_mut()
                .insert(FAILED_HEADER, failed_header(&e));
            return Ok(failed);
        }
    };
    let stream = match &fetched.accepted {
        Some(Handback::Local(accepted)) => accepted.kind == Kind::Stream,
        Some(Handback::RemoteStream(_)) => true,
        _ => false,
    };
    let mut response = super::objects::answer(&app, upgrade, fetched)?;
    if stream && response.status() != StatusCode::SWITCHING_PROTOCOLS {
        response
            .headers_mut()
            .insert(STREAM_HEADER, HeaderValue::from_static("1"));
    }
    Ok(response)
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
