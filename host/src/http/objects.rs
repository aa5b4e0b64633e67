//! Delivering a request to the worker of the app whose route matches, or to the object its path
//! names, and the answer (or WebSocket) back.

use super::error::ApiError;
use super::limits::discard_body;
use super::state::{AppState, ClientAddress};
use super::{stream, websocket};
use crate::cluster::{Cluster, FORWARDED, Route, SECRET_HEADER, forward, forward_upgrade};
use crate::metrics::RequestLabels;
use crate::names::ObjectId;
use crate::objects::Fetched;
use crate::objects::ObjectError;
use crate::registry::{App, Namespace};
use crate::routing::{Target, parse_target};
use crate::runtime;
use crate::sockets::{Handback, Kind};
use crate::workers::StreamingError;
use axum::body::Body;
use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{FromRequestParts, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

pub(super) async fn object_request(
    State(app): State<AppState>,
    req: axum::extract::Request,
) -> Response {
    let objects = app.objects.clone();
    let tail = objects.runtime().tail();
    let line = tail
        .watched()
        .then(|| (req.method().to_string(), req.uri().to_string()));
    let started = std::time::Instant::now();
    let mut reached = Reached::default();
    let (response, code) = match deliver(app, req, &mut reached).await {
        Ok(response) => (response, ""),
        Err(e) => {
            let code = e.code();
            (e.into_response(), code)
        }
    };
    let status = response.status().as_u16();
    if let Some((method, path)) = line {
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        let fields = serde_json::json!({
            "method": method, "path": path, "status": status, "code": code, "ms": ms,
        });
        tail.send("request", &reached.namespace, &reached.object, fields);
    }
    objects
        .metrics()
        .requests
        .get_or_create(&RequestLabels {
            namespace: reached.namespace,
            status,
            code: code.to_owned(),
        })
        .inc();
    response
}

/// Where a request went, once known: the namespace (or app) and the object (none for a worker).
#[derive(Default)]
struct Reached {
    namespace: String,
    object: String,
}

/// A forwarded request given up because its node's lease ended before it answered.
pub(super) fn stopped_answering(node: &str) -> (StatusCode, String) {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        format!(
            "the object's node ({node}) stopped answering and its lease ended; the object is \
             moving to another node, which refuses nothing it wrote: retry soon"
        ),
    )
}

/// Takes the cluster's headers off a request: whether another node forwarded it (it carries the
/// cluster's secret), and then the client's address it names. Nobody else may set them, and the
/// object never sees them.
fn take_forwarding(cluster: &Cluster, parts: &mut axum::http::request::Parts) -> bool {
    let secret = parts.headers.remove(SECRET_HEADER);
    let forwarded = parts.headers.remove(FORWARDED);
    if !cluster.is_node(secret.as_ref().and_then(|v| v.to_str().ok())) {
        return false;
    }
    let client = forwarded
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        .and_then(|(_, address)| address.parse().ok());
    if let Some(address) = client {
        parts.extensions.insert(ClientAddress(address));
    }
    true
}

/// Whether a request asks for a WebSocket.
pub(super) fn wants_websocket(headers: &HeaderMap) -> bool {
    headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Where a request goes: an app's worker, or an object at its address.
enum Destination<'a> {
    Worker(Arc<App>),
    Object {
        namespace: Arc<Namespace>,
        target: Target<'a>,
    },
}

/// The longest match wins between the apps' worker routes and each public namespace's own
/// `/{namespace}/`; on a tie, the worker route (it was asked for by name). A private class, or
/// none, at the path answers as a namespace that is not deployed.
fn destination<'a>(
    app: &AppState,
    host: Option<&str>,
    uri: &'a Uri,
) -> Result<Destination<'a>, ApiError> {
    let worker = app.registry.route(host, uri.path());
    let object = parse_target(uri.path(), uri.query()).map(|target| {
        let namespace = app.objects.namespace(target.namespace);
        (target, namespace)
    });
    let object_length = match &object {
        Ok((target, Ok(namespace))) if namespace.current().public => {
            Some(1 + target.namespace.len())
        }
        _ => None,
    };
    match (worker, object_length) {
        (Some((app, length)), object) if object.is_none_or(|o| length >= o) => {
            Ok(Destination::Worker(app))
        }
        (_, Some(_)) => {
            let (target, namespace) = object.expect("matched above");
            Ok(Destination::Object {
                namespace: namespace.expect("matched above"),
                target,
            })
        }
        _ => {
            let (target, _) = object?;
            Err(ObjectError::UnknownNamespace(target.namespace.to_owned()).into())
        }
    }
}

/// Delivers a request; `reached` is set to where it went, for the metrics and the tail.
async fn deliver(
    app: AppState,
    req: axum::extract::Request,
    reached: &mut Reached,
) -> Result<Response, ApiError> {
    let (mut parts, body) = req.into_parts();
    let uri = parts.uri.clone();
    let host = parts
        .headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok());
    let destination = destination(&app, host, &uri)?;
    match &destination {
        Destination::Worker(app) => reached.namespace.clone_from(&app.name),
        Destination::Object { namespace, target } => {
            reached.namespace.clone_from(&namespace.name);
            reached.object = target.name.to_string();
        }
    }
    if let Some(cluster) = &app.cluster {
        let from_node = take_forwarding(cluster, &mut parts);
        if let Destination::Object { namespace, target } = &destination {
            let id = ObjectId::new(&namespace.name, &target.name);
            match cluster.route(&id) {
                Route::Here { .. } => {}
                Route::There(node) if !from_node => {
                    let client = parts
                        .extensions
                        .get::<ClientAddress>()
                        .map(|a| a.0.to_string());
                    let config = cluster.config();
                    let upgrade = wants_websocket(&parts.headers);
                    let request = axum::extract::Request::from_parts(parts, body);
                    let (secret, from) = (&config.secret, &config.node);
                    cluster.count_forwarded();
                    let forwarded = async {
                        if upgrade {
                            forward_upgrade(&node, request, secret, from, client).await
                        } else {
                            forward(&node, request, secret, from, client).await
                        }
                    };
                    let forwarded = tokio::select! {
                        answer = forwarded => answer,
                        () = cluster.until_moved(&id, &node) => Err(stopped_answering(&node)),
                    };
                    return forwarded.map_err(|(status, message)| {
                        let code = match status {
                            StatusCode::SERVICE_UNAVAILABLE => "moved",
                            _ => "forward_failed",
                        };
                        ApiError::new(status, code, message)
                    });
                }
                // Forwarded once already, or nobody serves it now: the client retries.
                Route::There(_) | Route::Nowhere => {
                    discard_body(body, app.max_request_body, app.body_timeout).await;
                    return Err(ObjectError::Moved.into());
                }
            }
        }
    }
    // An http-worker reads the body itself, as it comes; wasi:http has no upgrades, so a
    // WebSocket handshake is an ordinary request to it.
    if let Destination::Worker(worker) = &destination
        && worker.worker.as_ref().is_some_and(|w| w.is_http_worker())
    {
        let request = axum::extract::Request::from_parts(parts, body);
        return app.workers.serve(worker, request).await.map_err(|e| {
            if let StreamingError::Object(e) = &e
                && e.is_overloaded()
            {
                app.objects.count_overload(e);
            }
            e.into()
        });
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
    let counted = |e: &ObjectError| {
        if e.is_overloaded() {
            app.objects.count_overload(e);
        }
    };
    if let Destination::Object { namespace, target } = &destination {
        // A flood to a busy object is refused before its bodies are read.
        let declared = parts
            .headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .unwrap_or(0);
        if let Err(e) = app
            .objects
            .has_room(&namespace.name, &target.name, declared)
        {
            counted(&e);
            discard_body(body, app.max_request_body, app.body_timeout).await;
            return Err(e.into());
        }
    }
    // The share of the bodies' budget is held until the answer: the bytes live until then.
    let (body, _share) = app.read_object_body(body, &parts.headers).await?;
    let headers = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let client_address = parts
        .extensions
        .get::<ClientAddress>()
        .map(|a| a.0.to_string());
    let mut request = runtime::Request {
        method: parts.method.as_str().to_owned(),
        path: String::new(),
        headers,
        body,
        client_address,
    };
    let fetched = match destination {
        Destination::Worker(worker) => {
            request.path = match uri.query() {
                Some(q) => format!("{}?{q}", uri.path()),
                None => uri.path().to_owned(),
            };
            app.workers.fetch(&worker, request, upgrade.is_some()).await
        }
        Destination::Object { namespace, target } => {
            request.path = target.path;
            let upgrading = upgrade.is_some();
            app.objects
                .fetch(namespace, &target.name, request, upgrading, None)
                .await
        }
    }
    .inspect_err(counted)?;
    answer(&app, upgrade, fetched)
}

/// The HTTP answer to a request an object (or a worker) answered: its response, and the socket
/// it accepted, if any: a stream the response's body goes on with, or a WebSocket the upgrade
/// opens (relayed to another node when a stub call handed one back from there).
pub(super) fn answer(
    app: &AppState,
    upgrade: Option<WebSocketUpgrade>,
    mut fetched: Fetched,
) -> Result<Response, ApiError> {
    let limit = app.sockets.max_message;
    // Most sockets sit idle most of the time: tungstenite's default 128 KiB read buffer per
    // socket would dwarf everything else a hibernated socket costs. It still grows for a larger
    // frame.
    let sized = |upgrade: WebSocketUpgrade| {
        upgrade
            .read_buffer_size(256)
            .max_message_size(limit)
            .max_frame_size(limit)
    };
    let status = fetched.response.status;
    match (upgrade, fetched.accepted) {
        (_, Some(Handback::Local(accepted))) if accepted.kind == Kind::Stream && status != 101 => {
            let first = std::mem::take(&mut fetched.response.body);
            let mut response = to_http(fetched.response)?;
            let (sockets, objects) = (app.sockets.clone(), app.objects.clone());
            *response.body_mut() = stream::body(first, accepted, sockets, objects);
            Ok(response)
        }
        (Some(upgrade), Some(Handback::Local(accepted)))
            if accepted.kind == Kind::WebSocket && status == 101 =>
        {
            // Shared: every idle socket's task holds its owner, so it is one pointer there. The
            // owner is the object that accepted, which a worker may have handed the upgrade to.
            let owner = accepted.owner().clone();
            let (sockets, objects) = (app.sockets.clone(), app.objects.clone());
            // A failed handshake drops `accepted` with the callback, which forgets the socket.
            Ok(sized(upgrade)
                .on_upgrade(move |ws| websocket::serve(ws, sockets, objects, owner, accepted)))
        }
        (_, Some(Handback::RemoteStream(rest))) if status != 101 => {
            let mut response = to_http(fetched.response)?;
            *response.body_mut() = Body::from_stream(rest);
            Ok(response)
        }
        (Some(upgrade), Some(Handback::RemoteWebSocket(node))) if status == 101 => {
            Ok(sized(upgrade).on_upgrade(move |ws| websocket::relay(ws, *node)))
        }
        // Accepted, but the answer refuses the upgrade: dropping `accepted` forgets the socket.
        (_, Some(_)) => to_http(fetched.response),
        (_, None) if status == 101 => Err(ApiError::bad_response(
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
    let bad = |what: String| ApiError::bad_response(format!("the object answered with {what}"));
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
