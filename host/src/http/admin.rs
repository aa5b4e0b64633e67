//! The admin API: listing, deploying and deleting namespaces and apps, setting secrets, and the
//! host's stats. Every route needs the admin token as `Authorization: Bearer <token>`.

use super::error::ApiError;
use super::limits::{BodyDeadline, read_body};
use super::state::AppState;
use crate::cluster::Change;
use crate::names::{self, ObjectId};
use crate::registry::{
    AppError, AppSpec, AppUpload, DeploymentInfo, ForgetError, MAX_SECRET_BYTES,
};
use crate::storage::{DbError, InventoryOrder};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde_json::json;
use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

/// Checks the bearer token. Both sides are hashed first, so the comparison takes the same time
/// whatever the guess, and its length leaks nothing. The scheme is case-insensitive (RFC 9110).
pub(super) fn authorize(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let refuse =
        |message: &str| ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", message.to_owned());
    let value = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| refuse("the admin API needs `Authorization: Bearer <token>`"))?;
    let given = value
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim_start_matches(' '))
        .ok_or_else(|| {
            refuse("the admin API needs the Bearer scheme: `Authorization: Bearer <token>`")
        })?;
    if !crate::names::same_secret(given, token) {
        return Err(refuse("wrong admin token"));
    }
    Ok(())
}

/// The `{namespace}` of an admin route, checked. A segment that does not percent-decode to
/// UTF-8 is an invalid name like any other, not axum's plain-text rejection.
pub(super) fn namespace_param(
    param: Result<Path<String>, PathRejection>,
) -> Result<String, ApiError> {
    let Path(namespace) = param.map_err(|e| {
        ApiError::invalid_name(format!(
            "the namespace is not a valid name: {}",
            e.body_text()
        ))
    })?;
    names::check_namespace(&namespace)?;
    Ok(namespace)
}

pub(super) async fn list_namespaces(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let namespaces: Vec<_> = app
        .registry
        .list()
        .iter()
        .map(|info| namespace_json(&app, info))
        .collect();
    Ok(axum::Json(json!({ "namespaces": namespaces })).into_response())
}

/// A deployed namespace as the admin API shows it: its deployment, for how many more
/// milliseconds its objects run in the background, and why (`"limit"`: one of its events hit a
/// limit; `"share"`: it ran more than its share of the CPU beside others); both `null` in the
/// foreground.
fn namespace_json(app: &AppState, info: &DeploymentInfo) -> serde_json::Value {
    let mut value = json!(info);
    let background = app.objects.background_left(&info.namespace);
    value["background_for_ms"] =
        json!(background.map(|(left, _)| u64::try_from(left.as_millis()).unwrap_or(u64::MAX)));
    value["background_cause"] = json!(background.map(|(_, cause)| cause.as_str()));
    value
}

/// What the host holds in memory right now.
pub(super) async fn stats(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let calls = app.objects.call_stats();
    Ok(axum::Json(json!({
        "live_instances": app.objects.live_instances(),
        "instance_memory_bytes": app.objects.instance_memory(),
        "overloaded": app.objects.overloaded_count(),
        "awake_objects": app.objects.awake_objects(),
        "idle_workers": app.workers.idle_count(),
        "idle_shared_instances": app.objects.idle_shared_instances(),
        "open_sockets": app.sockets.open_count(),
        "auto_responses": app.sockets.auto_response_count(),
        "socket_bytes_waiting": app.sockets.bytes_waiting(),
        "sockets_closed_slow": app.sockets.slow_close_count(),
        "pending_alarms": app.alarms.pending(),
        "namespaces": app.registry.list().len(),
        "storage": {
            "full": app.objects.storage_full(),
            "failed_commits": app.objects.failed_commits(),
            "fenced_commits": app.objects.committer().fenced_commits(),
        },
        "stub_calls": {
            "from_objects": calls.from_objects(),
            "from_workers": calls.from_workers(),
        },
    }))
    .into_response())
}

pub(super) async fn show_namespace(
    State(app): State<AppState>,
    namespace: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let namespace = namespace_param(namespace)?;
    let deployment = app.registry.get(&namespace).ok_or_else(|| {
        ApiError::unknown_namespace(format!("no namespace {namespace:?} is deployed"))
    })?;
    Ok(axum::Json(namespace_json(&app, &deployment.info)).into_response())
}

pub(super) async fn deploy(
    State(app): State<AppState>,
    namespace: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let namespace = namespace_param(namespace)?;
    let deadline = BodyDeadline::Progress(app.body_timeout);
    let (bytes, _) = read_body(body, &headers, app.max_component_bytes, deadline, None).await?;
    let registry = app.registry.clone();
    let change = Change {
        kind: "deploy".into(),
        name: namespace.clone(),
        body: bytes.to_vec(),
    };
    let info = registry_change(&app, change, move || registry.deploy(&namespace, &bytes)).await??;
    if let Some(deployed) = app.registry.get(&info.namespace) {
        app.objects
            .forget_shared_instances(&info.namespace, deployed.serial);
    }
    Ok(axum::Json(info).into_response())
}

/// An app deploy as the admin API takes it: the spec, and each component base64-encoded.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct AppBody {
    spec: AppSpec,
    worker: Option<String>,
    #[serde(default)]
    classes: BTreeMap<String, String>,
}

/// A route parameter that must be a name (an app's, a secret's), checked.
fn name_param(param: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(name) = param
        .map_err(|e| ApiError::invalid_name(format!("not a valid name: {}", e.body_text())))?;
    Ok(name)
}

fn app_error(e: AppError) -> ApiError {
    let (status, code) = match &e {
        AppError::UnknownApp(_) => (StatusCode::NOT_FOUND, "unknown_app"),
        AppError::Taken { .. } => (StatusCode::CONFLICT, "owned_by_app"),
        AppError::Db(db) if db.is_full() => (StatusCode::INTERNAL_SERVER_ERROR, "storage_full"),
        AppError::Db(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
        AppError::Component { .. } if !e.is_client_error() => {
            (StatusCode::INTERNAL_SERVER_ERROR, "storage_error")
        }
        AppError::Component { .. } => (StatusCode::BAD_REQUEST, "invalid_component"),
        AppError::Name(_) => (StatusCode::BAD_REQUEST, "invalid_name"),
        AppError::Spec(_) => (StatusCode::BAD_REQUEST, "invalid_app"),
    };
    ApiError::new(status, code, e.to_string())
}

/// `PUT /_admin/apps/{app}`: deploys an app, all or nothing. The upload (every component,
/// base64 in JSON) may be up to twice `--max-component-bytes`.
pub(super) async fn deploy_app(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let name = name_param(name)?;
    let deadline = BodyDeadline::Progress(app.body_timeout);
    // The admin's uploads are not counted in the bodies' budget: they are authorized first.
    let (bytes, _) = read_body(body, &headers, 2 * app.max_component_bytes, deadline, None).await?;
    let upload = app_upload(&bytes)?;
    let registry = app.registry.clone();
    let change = Change {
        kind: "app".into(),
        name: name.clone(),
        body: bytes.to_vec(),
    };
    let deployed =
        registry_change(&app, change, move || registry.deploy_app(&name, upload)).await?;
    let info = deployed.map_err(app_error)?;
    app.workers.forget_older(&info.name, info.version);
    Ok(axum::Json(info).into_response())
}

/// An app upload, decoded: the spec, and each component from base64.
fn app_upload(bytes: &[u8]) -> Result<AppUpload, ApiError> {
    let bad = |m: String| ApiError::new(StatusCode::BAD_REQUEST, "invalid_app", m);
    let body: AppBody =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("the app upload: {e}")))?;
    let decode = |what: &str, b64: &str| {
        BASE64
            .decode(b64)
            .map_err(|e| bad(format!("{what}: not base64: {e}")))
    };
    let worker = body
        .worker
        .as_deref()
        .map(|w| decode("the worker", w))
        .transpose()?;
    let mut classes = BTreeMap::new();
    for (namespace, b64) in &body.classes {
        classes.insert(namespace.clone(), decode(namespace, b64)?);
    }
    Ok(AppUpload {
        spec: body.spec,
        worker,
        classes,
    })
}

/// Makes a change to the registry through `op`, off the async workers; in a cluster, also
/// through the log that takes it to every node (see `cluster::deploys`).
async fn registry_change<T: Send + 'static, E: From<DbError> + Send + 'static>(
    app: &AppState,
    change: Change,
    op: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<Result<T, E>, ApiError> {
    let cluster = app.cluster.clone();
    tokio::task::spawn_blocking(move || match cluster {
        Some(cluster) => cluster.change(&change, op),
        None => op(),
    })
    .await
    .map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "deploy_failed",
            format!("deploy panicked: {e}"),
        )
    })
}

/// Applies a change another node of the cluster made (see `cluster::deploys`). Blocking.
pub(crate) fn apply_change(app: &AppState, change: &Change) -> Result<(), String> {
    let name = &change.name;
    match change.kind.as_str() {
        "deploy" => {
            app.registry
                .deploy(name, &change.body)
                .map_err(|e| e.to_string())?;
        }
        "app" => {
            let upload = app_upload(&change.body).map_err(|e| e.message().to_owned())?;
            let info = app
                .registry
                .deploy_app(name, upload)
                .map_err(|e| e.to_string())?;
            app.workers.forget_older(&info.name, info.version);
        }
        "secret" => {
            let secret: SecretChange =
                serde_json::from_slice(&change.body).map_err(|e| e.to_string())?;
            app.registry
                .put_secret(name, &secret.name, &secret.value)
                .map_err(|e| e.to_string())?;
        }
        "forget" => {
            // Its objects' state is gone from the cluster's store already; here, its code.
            match app.registry.forget(name) {
                Ok(_) | Err(ForgetError::Unknown(_)) => {}
                Err(e) => return Err(e.to_string()),
            }
            app.storage
                .local
                .drop_deployment(name)
                .map_err(|e| e.to_string())?;
        }
        other => return Err(format!("a change of an unknown kind {other:?}")),
    }
    Ok(())
}

/// A secret's change, in the cluster's log.
#[derive(serde::Serialize, serde::Deserialize)]
struct SecretChange {
    name: String,
    value: String,
}

/// `GET /_admin/apps`.
pub(super) async fn list_apps(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    Ok(axum::Json(json!({ "apps": app.registry.list_apps() })).into_response())
}

/// `GET /_admin/apps/{app}`.
pub(super) async fn show_app(
    State(app): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let name = name_param(name)?;
    let deployed = app
        .registry
        .app(&name)
        .ok_or_else(|| app_error(AppError::UnknownApp(name)))?;
    Ok(axum::Json(&deployed.info).into_response())
}

/// `PUT /_admin/apps/{app}/secrets/{name}`: the body is the value. Never shown back.
pub(super) async fn put_secret(
    State(app): State<AppState>,
    params: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let Path((name, secret)) = params
        .map_err(|e| ApiError::invalid_name(format!("not a valid name: {}", e.body_text())))?;
    let deadline = BodyDeadline::Whole(app.body_timeout);
    let (bytes, _) = read_body(body, &headers, MAX_SECRET_BYTES, deadline, None).await?;
    let value = String::from_utf8(bytes.to_vec()).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_secret",
            "a secret is UTF-8 text".to_owned(),
        )
    })?;
    let change = Change {
        kind: "secret".into(),
        name: name.clone(),
        body: serde_json::to_vec(&SecretChange {
            name: secret.clone(),
            value: value.clone(),
        })
        .expect("a secret serializes"),
    };
    let registry = app.registry.clone();
    let (app_name, secret_name) = (name.clone(), secret.clone());
    registry_change(&app, change, move || {
        registry.put_secret(&app_name, &secret_name, &value)
    })
    .await?
    .map_err(app_error)?;
    Ok(axum::Json(json!({ "app": name, "secret": secret })).into_response())
}

/// `DELETE /_admin/namespaces/{namespace}`: the hosted service's deleted-class migration for a
/// lone namespace. It stops being served at once; its objects are let finish what they were
/// doing (up to 30 s), their alarms forgotten and their sockets closed with 1001; then its code
/// and every object's storage and alarm are deleted in one transaction. In a cluster every live
/// node does the first part before the data goes (`cluster::namespaces`).
pub(super) async fn delete_namespace(
    State(app): State<AppState>,
    namespace: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let namespace = namespace_param(namespace)?;
    let stored = stored_objects(&app, &namespace).await?;
    app.registry.forget(&namespace).map_err(forget_refused)?;
    if !settle_namespace(&app, &namespace, &stored).await {
        return Err(objects_busy(
            "some of its objects were still busy after 30 s",
        ));
    }
    app.objects.forget_shared_instances(&namespace, u64::MAX);
    if let Some(cluster) = &app.cluster {
        cluster
            .forget_elsewhere(&namespace)
            .await
            .map_err(|why| objects_busy(&format!("not every node settled its objects: {why}")))?;
    }
    let db = app.storage.clone();
    let ns = namespace.clone();
    let dropped = on_db(move || db.drop_namespace(&ns)).await?;
    let change = Change {
        kind: "forget".into(),
        name: namespace.clone(),
        body: Vec::new(),
    };
    registry_change(&app, change, || Ok::<_, DbError>(()))
        .await?
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "storage_error",
                e.to_string(),
            )
        })?;
    Ok(
        axum::Json(json!({ "namespace": namespace, "objects_deleted": dropped.len() }))
            .into_response(),
    )
}

/// Why the registry would not forget a namespace: 404 unknown, or 409 an app's class.
pub(super) fn forget_refused(e: ForgetError) -> ApiError {
    match e {
        ForgetError::Unknown(_) => ApiError::unknown_namespace(e.to_string()),
        ForgetError::OwnedByApp { .. } => {
            ApiError::new(StatusCode::CONFLICT, "owned_by_app", e.to_string())
        }
    }
}

/// The objects of `namespace` that store something or have an alarm.
pub(super) async fn stored_objects(
    app: &AppState,
    namespace: &str,
) -> Result<Vec<ObjectId>, ApiError> {
    let db = app.storage.objects.clone();
    let ns = namespace.to_owned();
    let objects = on_db(move || db.inventory(&ns, InventoryOrder::Name, None, usize::MAX)).await?;
    Ok(objects.iter().map(|o| o.id).collect())
}

/// Settles this node's objects of a namespace the registry no longer serves: those in `stored`
/// and any awake now (one that has stored nothing yet may be about to) finish what they were
/// doing, up to 30 s; then their alarms are forgotten and their sockets closed with 1001.
/// Whether they all settled.
pub(super) async fn settle_namespace(app: &AppState, namespace: &str, stored: &[ObjectId]) -> bool {
    let mut ids: HashSet<ObjectId> = stored.iter().copied().collect();
    ids.extend(app.objects.awake_in(namespace));
    let list: Vec<ObjectId> = ids.iter().copied().collect();
    if !app.objects.settle(&list, Duration::from_secs(30)).await {
        return false;
    }
    app.alarms.forget_where(|id| ids.contains(id));
    app.sockets
        .close_namespace(namespace, 1001, "the namespace was deleted");
    true
}

/// 409 `objects_busy`: the namespace is no longer served, and its code and data are kept.
pub(super) fn objects_busy(why: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "objects_busy",
        format!(
            "the namespace is no longer served, but {why}; its code and data are kept: delete \
             it again"
        ),
    )
}

/// Runs a blocking read or write of the database off the async workers; its failure is a 500
/// `storage_error`.
pub(super) async fn on_db<T: Send + 'static>(
    op: impl FnOnce() -> Result<T, crate::storage::DbError> + Send + 'static,
) -> Result<T, ApiError> {
    let failed = |e: String| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "storage_error", e);
    tokio::task::spawn_blocking(op)
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn admin_token() {
        let with = |value: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
            authorize(&h, "secret")
        };
        assert!(authorize(&HeaderMap::new(), "secret").is_err());
        assert!(with("Bearer secret").is_ok());
        assert!(
            with("bearer secret").is_ok(),
            "the scheme is case-insensitive"
        );
        for wrong in [
            "Bearer nope",
            "Bearer secre",
            "Bearer secrets",
            "Bearer ",
            "Basic secret",
            "secret",
            "Bearersecret",
        ] {
            assert!(with(wrong).is_err(), "{wrong:?} must be refused");
        }
    }
}
