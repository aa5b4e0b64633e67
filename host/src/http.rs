//! HTTP: routing requests to objects, the admin API, and the JSON errors both answer with.
//!
//! - `ANY /{namespace}/{object-name}/{rest...}` is delivered to the object; it sees `/{rest}`
//!   with the query kept.
//! - `GET /_admin/namespaces`, `GET|PUT|POST /_admin/namespaces/{namespace}` (PUT and POST
//!   deploy) and `GET /_admin/stats` need the admin token as `Authorization: Bearer <token>`.
//!   Namespaces can never start with `_`, so the two never meet.
//!
//! Every answer the host makes itself is JSON, `{"error": message, "code": code}`, including the
//! refusals of malformed requests: a request target over [`MAX_TARGET_BYTES`] (414), headers over
//! [`MAX_HEADER_BYTES`] (431), a path with invalid percent-encoding (400), a body that does not
//! arrive within the body timeout (408), a method a route does not take (405). Requests hyper
//! cannot parse at all (not HTTP, over 100 headers, a head over about 400 KiB, a target over
//! 64 KiB) are refused by hyper before they reach these routes, with the status alone (400, 431,
//! 414) and no body.

use crate::names::{self, NameError};
use crate::objects::{ObjectError, Objects};
use crate::registry::{DeployError, DeploymentInfo, Registry};
use crate::routing::{RouteError, parse_target};
use crate::runtime;
use crate::websockets::{self, Sockets};
use axum::Router;
use axum::body::Body;
use axum::extract::FromRequestParts;
use axum::extract::rejection::PathRejection;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::Duration;

/// Longest request target (path and query, and the authority of an absolute-form target), in
/// bytes: a longer one is a 414. Object names are at most 256 bytes, so this leaves an object
/// 15 KiB of path and query.
pub const MAX_TARGET_BYTES: usize = 16 * 1024;

/// Most bytes of request headers (each name and value, plus 4 for `: ` and CRLF): more is a 431.
/// hyper's own limits, 100 headers and a head of about 400 KiB, sit above this one and answer a
/// bare 431.
pub const MAX_HEADER_BYTES: usize = 32 * 1024;

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
    /// How long a request body may take to arrive, from the end of its head.
    pub body_timeout: Duration,
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
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(object_request)
        .layer(middleware::from_fn(check_head))
        .with_state(state)
}

/// Refuses a request whose target or headers are too long, or whose path is not valid
/// percent-encoding, before any route sees it.
async fn check_head(req: axum::extract::Request, next: Next) -> Response {
    let uri = req.uri();
    let target = uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > MAX_TARGET_BYTES {
        return ApiError::new(
            StatusCode::URI_TOO_LONG,
            "uri_too_long",
            format!("the request target is {target} bytes; at most {MAX_TARGET_BYTES}"),
        )
        .into_response();
    }
    let headers: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if headers > MAX_HEADER_BYTES {
        return ApiError::new(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "headers_too_large",
            format!("the request headers are {headers} bytes; at most {MAX_HEADER_BYTES}"),
        )
        .into_response();
    }
    if let Some(at) = invalid_escape(uri.path()) {
        return ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            format!(
                "the path has an invalid percent-encoding at byte {at}: `%` must be followed by \
                 two hex digits"
            ),
        )
        .into_response();
    }
    next.run(req).await
}

/// The offset of the first `%` not followed by two hex digits, if any. Decoders disagree about
/// such a path (most keep it as it is, some refuse it), so the host refuses it rather than guess.
fn invalid_escape(path: &str) -> Option<usize> {
    let bytes = path.as_bytes();
    bytes.iter().enumerate().find_map(|(i, &b)| {
        let valid = b != b'%'
            || (bytes.get(i + 1).is_some_and(u8::is_ascii_hexdigit)
                && bytes.get(i + 2).is_some_and(u8::is_ascii_hexdigit));
        (!valid).then_some(i)
    })
}

/// An admin route asked with a method it does not take; axum adds the `Allow` header.
async fn method_not_allowed(method: axum::http::Method) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("this route does not take {method}"),
    )
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
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme it wants.
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"dohost admin\""),
            );
        }
        if self.code == "overloaded" {
            // Room frees up as instances go idle: soon.
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
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

impl From<RouteError> for ApiError {
    fn from(e: RouteError) -> Self {
        match e {
            RouteError::UnknownNamespace(_) => {
                ApiError::new(StatusCode::NOT_FOUND, "unknown_namespace", e.to_string())
            }
            RouteError::Name(e) => e.into(),
        }
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
            ObjectError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
        };
        let status = if e.is_overloaded() {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            status
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

/// How long a request body may take to arrive.
#[derive(Debug, Clone, Copy)]
enum BodyDeadline {
    /// All of it within this, from the end of the head: requests to objects, which anyone may
    /// send, so a client trickling a byte at a time holds its connection no longer than one
    /// that stalls.
    Whole(Duration),
    /// Each part within this of the one before: deploy uploads, which come from the admin
    /// (authorized before the body is read) and may be 128 MiB over a slow link.
    Progress(Duration),
}

impl BodyDeadline {
    /// The 408 of a body that did not make it.
    fn passed(self) -> ApiError {
        let message = match self {
            BodyDeadline::Whole(d) => {
                format!(
                    "the request body did not arrive within {} s",
                    d.as_secs_f64()
                )
            }
            BodyDeadline::Progress(d) => {
                format!(
                    "no part of the request body arrived for {} s",
                    d.as_secs_f64()
                )
            }
        };
        ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", message)
    }
}

/// Reads a whole body of at most `limit` bytes within `deadline`: a larger one is a 413, a slower
/// one a 408, one cut short (the client closed before its `Content-Length`, or sent broken
/// chunks) a 400.
async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: BodyDeadline,
) -> Result<Vec<u8>, ApiError> {
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
    let started = tokio::time::Instant::now();
    let mut body = Limited::new(body, limit);
    // Not sized by `Content-Length`: a client may declare the limit and send nothing.
    let mut bytes = Vec::new();
    loop {
        let until = match deadline {
            BodyDeadline::Whole(d) => started.checked_add(d),
            BodyDeadline::Progress(d) => tokio::time::Instant::now().checked_add(d),
        };
        let frame = match until {
            Some(until) => tokio::time::timeout_at(until, body.frame())
                .await
                .map_err(|_| deadline.passed())?,
            // A timeout past what an `Instant` can hold: none.
            None => body.frame().await,
        };
        match frame {
            None => return Ok(bytes),
            Some(Ok(frame)) => {
                if let Ok(data) = frame.into_data() {
                    bytes.extend_from_slice(&data);
                }
            }
            Some(Err(e)) if e.is::<LengthLimitError>() => return Err(too_large()),
            Some(Err(e)) => {
                // hyper's own words are one level down: "end of file before message length
                // reached", "invalid chunk size line".
                let mut message = format!("the request body is incomplete or malformed: {e}");
                let mut cause = e.source();
                while let Some(c) = cause {
                    message.push_str(&format!(": {c}"));
                    cause = c.source();
                }
                return Err(ApiError::new(StatusCode::BAD_REQUEST, "bad_body", message));
            }
        }
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
    let deadline = BodyDeadline::Whole(app.body_timeout);
    let body = read_body(body, &parts.headers, app.max_request_body, deadline).await?;
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
        .await
        .inspect_err(|e| {
            if e.is_overloaded() {
                app.objects.count_overload(e);
            }
        })?;
    let id = crate::names::ObjectId::new(target.namespace, &target.name);
    match (upgrade, fetched.accepted) {
        (Some(upgrade), Some(accepted)) if fetched.response.status == 101 => {
            // Shared: every idle socket's task holds its owner, so it is one pointer there.
            let owner = std::sync::Arc::new(websockets::Owner {
                namespace: target.namespace.to_owned(),
                name: target.name.clone(),
                id,
            });
            let (sockets, objects) = (app.sockets.clone(), app.objects.clone());
            let failed = (app.sockets.clone(), owner.clone());
            let socket = accepted.socket;
            let limit = app.sockets.max_message;
            Ok(upgrade
                // Most sockets sit idle most of the time: tungstenite's default 128 KiB read
                // buffer per socket would dwarf everything else a hibernated socket costs. It
                // still grows for a larger frame.
                .read_buffer_size(256)
                .max_message_size(limit)
                .max_frame_size(limit)
                .on_failed_upgrade(move |_| {
                    failed.0.remove(&failed.1.id, socket);
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
/// whatever the guess, and its length leaks nothing. The scheme is case-insensitive (RFC 9110).
fn authorize(headers: &HeaderMap, token: &str) -> Result<(), ApiError> {
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
    let (a, b) = (
        Sha256::digest(given.as_bytes()),
        Sha256::digest(token.as_bytes()),
    );
    let diff = a
        .iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y));
    if diff != 0 {
        return Err(refuse("wrong admin token"));
    }
    Ok(())
}

/// The `{namespace}` of an admin route, checked. A segment that does not percent-decode to
/// UTF-8 is an invalid name like any other, not axum's plain-text rejection.
fn namespace_param(param: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(namespace) = param.map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_name",
            format!("the namespace is not a valid name: {}", e.body_text()),
        )
    })?;
    names::check_namespace(&namespace)?;
    Ok(namespace)
}

async fn list_namespaces(
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
async fn stats(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    Ok(axum::Json(json!({
        "live_instances": app.objects.live_instances(),
        "instance_memory_bytes": app.objects.instance_memory(),
        "overloaded": app.objects.overloaded_count(),
        "awake_objects": app.objects.awake_objects(),
        "open_sockets": app.sockets.open_count(),
        "auto_responses": app.sockets.auto_response_count(),
        "socket_bytes_waiting": app.sockets.bytes_waiting(),
        "sockets_closed_slow": app.sockets.slow_close_count(),
        "pending_alarms": app.alarms.pending(),
        "namespaces": app.registry.list().len(),
    }))
    .into_response())
}

async fn show_namespace(
    State(app): State<AppState>,
    namespace: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let namespace = namespace_param(namespace)?;
    let deployment = app.registry.get(&namespace).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_namespace",
            format!("no namespace {namespace:?} is deployed"),
        )
    })?;
    Ok(axum::Json(namespace_json(&app, &deployment.info)).into_response())
}

async fn deploy(
    State(app): State<AppState>,
    namespace: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    authorize(&headers, &app.admin_token)?;
    let namespace = namespace_param(namespace)?;
    let deadline = BodyDeadline::Progress(app.body_timeout);
    let bytes = read_body(body, &headers, app.max_component_bytes, deadline).await?;
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

    #[test]
    fn percent_escapes() {
        for good in ["/", "/t/a%20b/c", "/t/%C3%a9/", "/t/%00/x", "/%41"] {
            assert_eq!(invalid_escape(good), None, "{good}");
        }
        for (bad, at) in [("/t/%zz/", 3), ("/t/a%4", 4), ("/t/%", 3), ("/t/%%41", 3)] {
            assert_eq!(invalid_escape(bad), Some(at), "{bad}");
        }
    }
}
