//! HTTP: routing requests to objects, the admin API, and the JSON errors both answer with.
//!
//! - `ANY /{namespace}/{object-name}/{rest...}` is delivered to the object; it sees `/{rest}`
//!   with the query kept.
//! - `GET /_admin/namespaces`, `GET|PUT /_admin/namespaces/{namespace}` and `GET /_admin/stats`
//!   need the admin token as `Authorization: Bearer <token>`. Namespaces can never start with `_`, so the two never meet.

use crate::names::{self, NameError};
use crate::objects::{ObjectError, Objects};
use crate::registry::{DeployError, Registry};
use crate::runtime;
use crate::websockets::{self, Sockets};
use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub objects: Objects,
    pub sockets: Arc<Sockets>,
    pub alarms: Arc<crate::alarms::Alarms>,
    pub registry: Arc<Registry>,
    pub admin_token: Arc<str>,
    pub max_request_body: usize,
    pub max_component_bytes: usize,
}

/// The host's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/_admin/namespaces", get(list_namespaces))
        .route("/_admin/stats", get(stats))
        .route(
            "/_admin/namespaces/{namespace}",
            get(show_namespace).put(deploy).post(deploy),
        )
        .fallback(object_request)
        .with_state(state)
}

/// An error answered as `{"error": message, "code": code}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.message, "code": self.code });
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status.is_client_error() {
            // Refused before its body was read (a wrong token, a body too large, no such
            // namespace): the connection cannot carry another request, so say so, rather than
            // let the client reuse it and fail.
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        response
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_name", e.to_string())
    }
}

impl From<ObjectError> for ApiError {
    fn from(e: ObjectError) -> Self {
        let (status, code) = match &e {
            ObjectError::Event(ev) => (StatusCode::INTERNAL_SERVER_ERROR, ev.code()),
            ObjectError::Commit(_) => (StatusCode::INTERNAL_SERVER_ERROR, "commit_failed"),
            ObjectError::Storage(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
            ObjectError::UnknownNamespace(_) => (StatusCode::NOT_FOUND, "unknown_namespace"),
            ObjectError::ShuttingDown => (StatusCode::SERVICE_UNAVAILABLE, "shutting_down"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<DeployError> for ApiError {
    fn from(e: DeployError) -> Self {
        let code = match &e {
            DeployError::Namespace(_) => "invalid_name",
            DeployError::NotWasm => "not_wasm",
            DeployError::CoreModule => "core_module",
            DeployError::Invalid(_) => "invalid_component",
            DeployError::WrongWorld(_) => "wrong_world",
            DeployError::Db(_) => "storage_error",
        };
        let status = if e.is_client_error() {
            StatusCode::BAD_REQUEST
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        ApiError::new(status, code, e.to_string())
    }
}

/// Reads a whole body of at most `limit` bytes; a larger one is a 413.
async fn read_body(body: Body, headers: &HeaderMap, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the request body is larger than {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes().to_vec()),
        Err(e) if e.is::<LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("reading the request body: {e}"),
        )),
    }
}

async fn object_request(State(app): State<AppState>, req: axum::extract::Request) -> Response {
    match deliver(app, req).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// Whether a request asks for a WebSocket.
fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn deliver(app: AppState, req: axum::extract::Request) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let uri = parts.uri.clone();
    let target = parse_target(uri.path(), uri.query())?;
    if app.registry.get(target.namespace).is_none() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_namespace",
            format!("no namespace {:?} is deployed", target.namespace),
        ));
    }
    let upgrade = if wants_websocket(&parts.headers) {
        let upgrade = WebSocketUpgrade::from_request_parts(&mut parts, &())
            .await
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_upgrade",
                    format!("invalid WebSocket upgrade: {}", rejection.body_text()),
                )
            })?;
        Some(upgrade)
    } else {
        None
    };
    let body = read_body(body, &parts.headers, app.max_request_body).await?;
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let request = runtime::Request {
        method: parts.method.as_str().to_owned(),
        path: target.path,
        headers,
        body,
    };
    let fetched = app
        .objects
        .fetch(target.namespace, &target.name, request, upgrade.is_some())
        .await?;
    let id = crate::names::ObjectId::new(target.namespace, &target.name);
    match (upgrade, fetched.accepted) {
        (Some(upgrade), Some(accepted)) if fetched.response.status == 101 => {
            let owner = websockets::Owner {
                namespace: target.namespace.to_owned(),
                name: target.name.clone(),
                id,
            };
            let (sockets, objects) = (app.sockets.clone(), app.objects.clone());
            let failed = app.sockets.clone();
            let socket = accepted.socket;
            let limit = app.sockets.max_message;
            Ok(upgrade
                // Most sockets sit idle most of the time: tungstenite's default 128 KiB read
                // buffer per socket would dwarf everything else a hibernated socket costs. It
                // still grows for a larger frame.
                .read_buffer_size(512)
                .max_message_size(limit)
                .max_frame_size(limit)
                .on_failed_upgrade(move |_| {
                    failed.remove(&id, socket);
                })
                .on_upgrade(move |ws| websockets::serve(ws, sockets, objects, owner, accepted)))
        }
        (_, Some(accepted)) => {
            // Accepted, but the answer refuses the upgrade: the socket never opens.
            app.sockets.remove(&id, accepted.socket);
            to_http(fetched.response)
        }
        (_, None) if fetched.response.status == 101 => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_response",
            "the object answered 101 without accepting a WebSocket",
        )),
        (_, None) => to_http(fetched.response),
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq)]
struct Target<'a> {
    namespace: &'a str,
    name: String,
    /// The path the object sees: `/{rest}` and the query.
    path: String,
}

fn parse_target<'a>(path: &'a str, query: Option<&str>) -> Result<Target<'a>, ApiError> {
    let mut segments = path.strip_prefix('/').unwrap_or(path).splitn(3, '/');
    let namespace = segments.next().unwrap_or_default();
    if names::check_namespace(namespace).is_err() {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_namespace",
            format!(
                "no namespace {:?} is deployed; objects live at /{{namespace}}/{{object-name}}/...",
                namespace.chars().take(80).collect::<String>()
            ),
        ));
    }
    let name = names::decode_object_name(segments.next().unwrap_or_default())?;
    let mut path = format!("/{}", segments.next().unwrap_or_default());
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    Ok(Target {
        namespace,
        name,
        path,
    })
}

/// Headers the host owns: hop-by-hop ones and the body's length.
fn is_reserved_header(name: &HeaderName) -> bool {
    [
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::UPGRADE,
        header::TE,
        header::TRAILER,
        HeaderName::from_static("keep-alive"),
        header::PROXY_AUTHENTICATE,
        header::PROXY_AUTHORIZATION,
    ]
    .contains(name)
}

fn to_http(r: runtime::Response) -> Result<Response, ApiError> {
    let bad = |what: String| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "bad_response",
            format!("the object answered with {what}"),
        )
    };
    let status = StatusCode::from_u16(r.status)
        .map_err(|_| bad(format!("an invalid status code {}", r.status)))?;
    let mut response = Response::new(Body::from(r.body));
    *response.status_mut() = status;
    for (name, value) in r.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| bad(format!("an invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| bad(format!("an invalid value for header {name}")))?;
        if !is_reserved_header(&name) {
            response.headers_mut().append(name, value);
        }
    }
    Ok(response)
}

/// Checks the bearer token. Both sides are hashed first, so the comparison takes the same time
/// whatever the guess, and its length leaks nothing.
fn authorize(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the admin API needs `Authorization: Bearer <token>`",
            )
        })?;
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if diff != 0 {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong admin token",
        ));
    }
    Ok(())
}

async fn list_namespaces(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    Ok(axum::Json(json!({ "namespaces": app.registry.list() })).into_response())
}

/// What the host holds in memory right now.
async fn stats(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    Ok(axum::Json(json!({
        "live_instances": app.objects.live_instances(),
        "awake_objects": app.objects.awake_objects(),
        "open_sockets": app.sockets.open_count(),
        "auto_responses": app.sockets.auto_response_count(),
        "pending_alarms": app.alarms.pending(),
        "namespaces": app.registry.list().len(),
    }))
    .into_response())
}

async fn show_namespace(
    State(app): State<AppState>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let deployment = app.registry.get(&namespace).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_namespace",
            format!("no namespace {namespace:?} is deployed"),
        )
    })?;
    Ok(axum::Json(&deployment.info).into_response())
}

async fn deploy(
    State(app): State<AppState>,
    Path(namespace): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    names::check_namespace(&namespace)?;
    let bytes = read_body(body, &headers, app.max_component_bytes).await?;
    let registry = app.registry.clone();
    let info = tokio::task::spawn_blocking(move || registry.deploy(&namespace, &bytes))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "deploy_failed",
                format!("deploy panicked: {e}"),
            )
        })??;
    Ok(axum::Json(info).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets() {
        let t = parse_target("/counter/alice", None).unwrap();
        assert_eq!(
            (t.namespace, t.name.as_str(), t.path.as_str()),
            ("counter", "alice", "/")
        );
        let t = parse_target("/counter/alice/", Some("x=1")).unwrap();
        assert_eq!(t.path, "/?x=1");
        let t = parse_target("/counter/a%20b/x/y%2Fz", Some("q=%20")).unwrap();
        assert_eq!(
            (t.name.as_str(), t.path.as_str()),
            ("a b", "/x/y%2Fz?q=%20")
        );
        assert_eq!(
            parse_target("/", None).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            parse_target("/Counter/a", None).unwrap_err().status,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            parse_target("/counter", None).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_target("/counter/", None).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_target("/counter/%FF", None).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let long = format!("/counter/{}", "a".repeat(257));
        assert_eq!(
            parse_target(&long, None).unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
    }

    #[test]
    fn admin_token() {
        let mut h = HeaderMap::new();
        assert!(authorize(&h, "secret").is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer nope"),
        );
        assert!(authorize(&h, "secret").is_err());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer secret"),
        );
        assert!(authorize(&h, "secret").is_ok());
    }
}
