//! Seeing the data: the admin page (`GET /_admin/`), the inventory of a namespace's objects
//! (`GET /_admin/namespaces/{namespace}/objects`), and an object's storage, read and written by
//! an operator (`.../objects/{name}/storage[/{key}]`) between the object's events, as an event of
//! its own: what it writes is committed like an event's writes, and the live instance, whose
//! memory may hold what was replaced, is ended.

use super::admin::{authorize, namespace_param, on_db};
use super::error::ApiError;
use super::limits::{BodyDeadline, read_body};
use super::state::AppState;
use crate::objects::{StorageAnswer, StorageOp};
use crate::sockets::Kind;
use crate::storage::{InventoryOrder, ListOptions};
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::Deserialize;
use serde_json::json;

/// Most objects on one page of the inventory.
const MAX_PAGE: usize = 1000;

#[derive(Deserialize)]
pub(super) struct Page {
    sort: Option<InventoryOrder>,
    limit: Option<usize>,
    /// By name: the page starts after this name.
    after: Option<String>,
}

/// A page of the namespace's objects: name, id, bytes, keys, last write, alarm, and whether it
/// is awake; `next` is the `after` of the next page (by name), `null` on the last.
pub(super) async fn objects(
    State(app): State<AppState>,
    namespace: Result<Path<String>, PathRejection>,
    page: Result<Query<Page>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let namespace = namespace_param(namespace)?;
    let Query(page) = page.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            format!(
                "{}: `sort` is name, size or last_write; `limit` a number",
                e.body_text()
            ),
        )
    })?;
    let order = page.sort.unwrap_or(InventoryOrder::Name);
    let limit = page.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let db = app.storage.objects.clone();
    let ns = namespace.clone();
    let rows = on_db(move || db.inventory(&ns, order, page.after.as_deref(), limit)).await?;
    let next = (order == InventoryOrder::Name && rows.len() == limit)
        .then(|| rows.last().map(|r| r.name.clone()))
        .flatten();
    let objects: Vec<_> = rows
        .iter()
        .map(|row| {
            let mut value = json!(row);
            value["awake"] = json!(app.objects.is_awake(&namespace, &row.name));
            value
        })
        .collect();
    Ok(axum::Json(json!({ "objects": objects, "next": next })).into_response())
}

/// The object of a storage route: its namespace (deployed) and name (checked).
fn object_param(
    param: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String), ApiError> {
    let Path((namespace, name)) = param.map_err(|e| ApiError::invalid_name(e.body_text()))?;
    crate::names::check_namespace(&namespace)?;
    crate::names::check_object_name(&name)?;
    Ok((namespace, name))
}

/// The object of a route that needs its namespace deployed: its namespace, name and id.
fn deployed_object(
    app: &AppState,
    param: Result<Path<(String, String)>, PathRejection>,
) -> Result<(String, String, crate::names::ObjectId), ApiError> {
    let (namespace, name) = object_param(param)?;
    app.objects.namespace(&namespace)?;
    let id = crate::names::ObjectId::new(&namespace, &name);
    Ok((namespace, name, id))
}

/// An entry as the admin API shows it: the value in base64, and as text too when it is UTF-8.
fn entry_json(key: &str, value: &[u8]) -> serde_json::Value {
    json!({
        "key": key,
        "value": BASE64.encode(value),
        "text": std::str::from_utf8(value).ok(),
    })
}

#[derive(Deserialize)]
pub(super) struct Listing {
    prefix: Option<String>,
    start_after: Option<String>,
    limit: Option<u32>,
}

/// `GET .../objects/{name}/storage`: a page of the object's entries, ascending; `next` is the
/// `start_after` of the next page.
pub(super) async fn list(
    State(app): State<AppState>,
    object: Result<Path<(String, String)>, PathRejection>,
    listing: Result<Query<Listing>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let (namespace, name) = object_param(object)?;
    let Query(listing) = listing
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let limit = listing.limit.unwrap_or(100).clamp(1, MAX_PAGE as u32);
    let options = ListOptions {
        prefix: listing.prefix,
        start_after: listing.start_after,
        limit: Some(limit),
        ..ListOptions::default()
    };
    let answer = app
        .objects
        .storage_op(&namespace, &name, StorageOp::List(options))
        .await?;
    let StorageAnswer::Entries(entries) = answer else {
        return Err(unexpected());
    };
    let next = (entries.len() == limit as usize)
        .then(|| entries.last().map(|(k, _)| k.clone()))
        .flatten();
    let entries: Vec<_> = entries.iter().map(|(k, v)| entry_json(k, v)).collect();
    Ok(axum::Json(json!({ "entries": entries, "next": next })).into_response())
}

/// `GET .../objects/{name}/storage/{key}`: one entry, or 404 `no_such_key`.
pub(super) async fn get_key(
    State(app): State<AppState>,
    Path((namespace, name, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let (namespace, name) = object_param(Ok(Path((namespace, name))))?;
    let answer = app
        .objects
        .storage_op(&namespace, &name, StorageOp::Get(key.clone()))
        .await?;
    match answer {
        StorageAnswer::Value(Some(value)) => {
            Ok(axum::Json(entry_json(&key, &value)).into_response())
        }
        StorageAnswer::Value(None) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_such_key",
            format!("the object has no key {key:?}"),
        )),
        _ => Err(unexpected()),
    }
}

/// `PUT .../objects/{name}/storage/{key}`: the body is the value; answers once it is durable.
pub(super) async fn put_key(
    State(app): State<AppState>,
    Path((namespace, name, key)): Path<(String, String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let (namespace, name) = object_param(Ok(Path((namespace, name))))?;
    let deadline = BodyDeadline::Whole(app.body_timeout);
    let (value, _share) = read_body(
        body,
        &headers,
        app.max_request_body,
        deadline,
        Some(&app.bodies),
    )
    .await?;
    app.objects
        .storage_op(&namespace, &name, StorageOp::Put(vec![(key, value)]))
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `DELETE .../objects/{name}/storage/{key}`: `{"deleted": whether it existed}`.
pub(super) async fn delete_key(
    State(app): State<AppState>,
    Path((namespace, name, key)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let (namespace, name) = object_param(Ok(Path((namespace, name))))?;
    let answer = app
        .objects
        .storage_op(&namespace, &name, StorageOp::Delete(key))
        .await?;
    let StorageAnswer::Deleted(deleted) = answer else {
        return Err(unexpected());
    };
    Ok(axum::Json(json!({ "deleted": deleted })).into_response())
}

#[derive(Deserialize)]
pub(super) struct Batch {
    put: Vec<BatchEntry>,
}

#[derive(Deserialize)]
struct BatchEntry {
    key: String,
    /// Base64.
    value: String,
}

/// `POST .../objects/{name}/storage` with `{"put": [{"key", "value": base64}]}`: up to 128
/// entries written together, as `dohost import` sends them.
pub(super) async fn put_batch(
    State(app): State<AppState>,
    object: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let (namespace, name) = object_param(object)?;
    let deadline = BodyDeadline::Whole(app.body_timeout);
    let (bytes, _share) = read_body(
        body,
        &headers,
        app.max_request_body,
        deadline,
        Some(&app.bodies),
    )
    .await?;
    let batch: Batch = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_batch",
            format!("not a batch: {e}"),
        )
    })?;
    let entries = batch
        .put
        .into_iter()
        .map(|e| {
            let value = BASE64.decode(&e.value).map_err(|err| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_batch",
                    format!("the value of {:?} is not base64: {err}", e.key),
                )
            })?;
            Ok((e.key, value))
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    let count = entries.len();
    app.objects
        .storage_op(&namespace, &name, StorageOp::Put(entries))
        .await?;
    Ok(axum::Json(json!({ "put": count })).into_response())
}

fn unexpected() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "storage_error",
        "the object answered another operation",
    )
}

/// `POST .../objects/{name}/alarm`: delivers the object's alarm now, as if it were due (for
/// tests and operators); `{"alarm": the time it was set for}`, or 404 `no_alarm`.
pub(super) async fn run_alarm(
    State(app): State<AppState>,
    object: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let (namespace, name, id) = deployed_object(&app, object)?;
    let db = app.storage.objects.clone();
    let due = on_db(move || db.alarm(&id)).await?;
    let Some(due) = due else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_alarm",
            "the object has no alarm set",
        ));
    };
    app.objects.alarm(&namespace, &name, due, 0).await?;
    Ok(axum::Json(json!({ "alarm": due })).into_response())
}

/// `POST .../objects/{name}/evict`: ends the object's live instance, as hibernation does, once
/// its events are done, so that a test can check what survives it; 409 `objects_busy` if it was
/// still busy after 10 s.
pub(super) async fn evict(
    State(app): State<AppState>,
    object: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let (_, _, id) = deployed_object(&app, object)?;
    if !app
        .objects
        .settle(&[id], std::time::Duration::from_secs(10))
        .await
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "objects_busy",
            "the object was still busy after 10 s",
        ));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// `GET .../objects/{name}`: one object as the admin page shows it: its id, alarm, whether it is
/// awake, and its open sockets (WebSockets and streams) with their tags.
pub(super) async fn object(
    State(app): State<AppState>,
    object: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let (namespace, name, id) = deployed_object(&app, object)?;
    let db = app.storage.objects.clone();
    let alarm = on_db(move || db.alarm(&id)).await?;
    let mut sockets = Vec::new();
    for (kind, label) in [(Kind::WebSocket, "websocket"), (Kind::Stream, "stream")] {
        for socket in app.sockets.list(&id, kind, None) {
            let tags = app.sockets.tags(&id, socket).unwrap_or_default();
            sockets.push(json!({ "id": socket, "kind": label, "tags": tags }));
        }
    }
    Ok(axum::Json(json!({
        "namespace": namespace,
        "name": name,
        "id": id.to_hex(),
        "alarm": alarm,
        "awake": app.objects.is_awake(&namespace, &name),
        "sockets": sockets,
    }))
    .into_response())
}

/// `GET /_admin/`: the admin page. The page itself is public; everything it shows comes from the
/// admin API with the token the user types in, which it keeps only in the tab's session storage.
pub(super) async fn page() -> Response {
    let mut response = include_str!("admin_page.html").into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}
