//! Stub calls to an object another node serves: the call travels to that node as one request to
//! `/_cluster/call` (with the cluster's secret), which runs it as its own stub call and answers
//! with the callee's answer as it is: status, headers and body, a response stream's body as it
//! comes, or, for a WebSocket the callee accepted, the upgraded connection, which the caller's
//! node then relays to its client.
//!
//! The call's head (the callee, the chain of waiting objects, the request's method, path and
//! headers) travels in one header, so that the body (or the upgrade) is the request's own. The
//! chain makes a cycle through several nodes refused as on one.

use super::forward::{CLIENT, SECRET_HEADER};
use super::{Cluster, Route};
use crate::names::ObjectId;
use crate::names::ObjectIdentity;
use crate::objects::Placement;
use crate::runtime::{CallError, Called, Chain, Request, Response};
use crate::sockets::Handback;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use futures::TryStreamExt;
use futures::future::BoxFuture;
use std::time::{Duration, Instant};

/// The node-to-node route of stub calls.
pub const CALL_PATH: &str = "/_cluster/call";

/// The call's head, as JSON in base64.
pub const CALL_HEADER: HeaderName = HeaderName::from_static("x-dohost-call");

/// On an answer: why the call failed (a [`CallError`] as JSON in base64); the rest is empty.
pub const FAILED_HEADER: HeaderName = HeaderName::from_static("x-dohost-call-failed");

/// On an answer: its body is a response stream, relayed as it comes.
pub const STREAM_HEADER: HeaderName = HeaderName::from_static("x-dohost-call-stream");

/// A stub call's head, as it travels between nodes.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForwardedCall {
    pub namespace: String,
    pub name: String,
    /// The objects waiting, outermost first, the callee last: `(namespace, name)`.
    pub chain: Vec<(String, String)>,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub client_address: Option<String>,
}

impl ForwardedCall {
    /// Reads a call's head from its header.
    pub fn from_header(value: Option<&HeaderValue>) -> Result<ForwardedCall, String> {
        let value = value.ok_or("a call without its head")?;
        let json = BASE64
            .decode(value.as_bytes())
            .map_err(|e| format!("a call's head: {e}"))?;
        serde_json::from_slice(&json).map_err(|e| format!("a call's head: {e}"))
    }

    /// The call's chain and request, with its body.
    pub fn into_parts(self, body: Vec<u8>) -> (Chain, Request) {
        let objects = self
            .chain
            .iter()
            .map(|(namespace, name)| ObjectIdentity::new(namespace, name))
            .collect();
        let request = Request {
            method: self.method,
            path: self.path,
            headers: self.headers,
            body,
            client_address: self.client_address,
        };
        (Chain::from_objects(objects), request)
    }
}

/// The header that tells the caller's node why a call failed.
pub fn failed_header(e: &CallError) -> HeaderValue {
    let json = serde_json::to_vec(e).expect("a call error serializes");
    HeaderValue::from_str(&BASE64.encode(json)).expect("base64 is a header value")
}

/// The callee's answer from the headers and body the callee's node sent: its failure, or its
/// response (the headers that are the callee's own).
fn answered(status: u16, headers: &HeaderMap, body: Vec<u8>) -> Result<Response, CallError> {
    if let Some(failed) = headers.get(FAILED_HEADER) {
        let json = BASE64
            .decode(failed.as_bytes())
            .map_err(|e| CallError::Internal(format!("a forwarded call's failure: {e}")))?;
        let e: CallError = serde_json::from_slice(&json)
            .map_err(|e| CallError::Internal(format!("a forwarded call's failure: {e}")))?;
        return Err(e);
    }
    let own = |name: &HeaderName| {
        ![
            axum::http::header::CONTENT_LENGTH,
            axum::http::header::TRANSFER_ENCODING,
            axum::http::header::CONNECTION,
            axum::http::header::DATE,
            STREAM_HEADER,
        ]
        .contains(name)
    };
    Ok(Response {
        status,
        headers: headers
            .iter()
            .filter(|(name, _)| own(name))
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body,
    })
}

impl Placement for Cluster {
    fn epoch_here(&self, id: &ObjectId) -> Option<u64> {
        match self.route(id) {
            Route::Here { epoch } => Some(epoch),
            Route::There(_) | Route::Nowhere => None,
        }
    }

    fn served_elsewhere(&self, id: &ObjectId) -> Option<String> {
        match self.route(id) {
            Route::There(url) => Some(url),
            Route::Here { .. } | Route::Nowhere => None,
        }
    }

    fn call<'a>(
        &'a self,
        node: &'a str,
        callee: &'a ObjectIdentity,
        chain: &'a Chain,
        request: Request,
        upgrade: bool,
    ) -> BoxFuture<'a, Result<Called, CallError>> {
        Box::pin(self.call_node(node, callee, chain, request, upgrade))
    }
}

impl Cluster {
    /// Makes a stub call to `callee`, which the node at `node_url` serves; `upgrade`: the request
    /// asks for a WebSocket the callee may accept.
    async fn call_node(
        &self,
        node_url: &str,
        callee: &ObjectIdentity,
        chain: &Chain,
        request: Request,
        upgrade: bool,
    ) -> Result<Called, CallError> {
        let started = Instant::now();
        self.forwarded_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let head = ForwardedCall {
            namespace: callee.namespace.clone(),
            name: callee.name.clone(),
            chain: chain
                .objects()
                .iter()
                .map(|o| (o.namespace.clone(), o.name.clone()))
                .collect(),
            method: request.method,
            path: request.path,
            headers: request.headers,
            client_address: request.client_address,
        };
        let head = BASE64.encode(serde_json::to_vec(&head).expect("a call's head serializes"));
        let url = format!("{}{CALL_PATH}", node_url.trim_end_matches('/'));
        let sent = async {
            if upgrade {
                return self.call_upgrade(&url, &head).await;
            }
            let sent = CLIENT
                .post(&url)
                .header(SECRET_HEADER, &self.config.secret)
                .header(CALL_HEADER, &head)
                .body(request.body)
                .send()
                .await;
            let r = sent.map_err(|e| unsent(&url, &e.to_string(), e.is_connect()))?;
            let (status, headers) = (r.status().as_u16(), r.headers().clone());
            if headers.contains_key(STREAM_HEADER) {
                let rest = r.bytes_stream().map_err(std::io::Error::other);
                let response = answered(status, &headers, Vec::new())?;
                Ok((response, Some(Handback::RemoteStream(Box::pin(rest)))))
            } else {
                let body = r
                    .bytes()
                    .await
                    .map_err(|e| unsent(&url, &e.to_string(), false))?;
                Ok((answered(status, &headers, body.to_vec())?, None))
            }
        };
        // Given up once the callee's node stops serving it (its lease ended): if the call ever
        // runs there, that node refuses it or the fence refuses its commit.
        let (response, handback) = tokio::select! {
            answer = sent => answer?,
            () = self.until_moved(&callee.id, node_url) => {
                return Err(CallError::Overloaded(format!(
                    "the callee's node ({node_url}) stopped answering and its lease ended; retry soon"
                )));
            }
        };
        Ok(Called {
            response,
            accepted: handback,
            callee: started.elapsed(),
            handback: Duration::ZERO,
        })
    }

    /// A call that asks for a WebSocket: the callee's node answers 101 on a connection that is
    /// then the socket, or anything else as a plain answer.
    async fn call_upgrade(
        &self,
        url: &str,
        head: &str,
    ) -> Result<(Response, Option<Handback>), CallError> {
        use tokio_tungstenite::tungstenite::Error as WsError;
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let ws_url = url.replacen("http://", "ws://", 1);
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(|e| CallError::Internal(format!("a node's URL {url}: {e}")))?;
        let headers = request.headers_mut();
        let value = |v: &str| {
            HeaderValue::from_str(v)
                .map_err(|e| CallError::Internal(format!("a call's header: {e}")))
        };
        headers.insert(SECRET_HEADER, value(&self.config.secret)?);
        headers.insert(CALL_HEADER, value(head)?);
        let authority = request
            .uri()
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_default();
        let tcp = tokio::time::timeout(
            Duration::from_secs(2),
            tokio::net::TcpStream::connect(&authority),
        )
        .await
        .map_err(|e| unsent(url, &e.to_string(), true))?
        .map_err(|e| unsent(url, &e.to_string(), true))?;
        match tokio_tungstenite::client_async(request, tcp).await {
            Ok((ws, _)) => Ok((
                Response {
                    status: 101,
                    headers: Vec::new(),
                    body: Vec::new(),
                },
                Some(Handback::RemoteWebSocket(Box::new(ws))),
            )),
            Err(WsError::Http(answer)) => {
                let (parts, body) = (*answer).into_parts();
                let response = answered(
                    parts.status.as_u16(),
                    &parts.headers,
                    body.unwrap_or_default(),
                )?;
                Ok((response, None))
            }
            Err(e) => Err(unsent(url, &e.to_string(), false)),
        }
    }
}

/// Why a call to another node got no answer: never sent (the node is away, the shard moving: like
/// an object with no room now, try again soon), or sent and then lost (it may have run).
fn unsent(url: &str, why: &str, never_sent: bool) -> CallError {
    if never_sent {
        CallError::Overloaded(format!(
            "the callee's node ({url}) could not be reached: {why}; retry soon"
        ))
    } else {
        CallError::Failed(format!(
            "the callee's node ({url}) went away before answering: {why}"
        ))
    }
}
