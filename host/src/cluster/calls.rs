//! Stub calls to an object another node serves: the call travels to that node as one request
//! (`POST /_cluster/call`, with the cluster's secret), which runs it as its own stub call and
//! sends back the callee's answer or why the call failed.
//!
//! The chain of waiting objects travels with the call, so a cycle through several nodes is
//! refused as on one. A WebSocket handed through such a call is not (the socket would have to
//! live on the caller's node while its object runs on another): the call fails with
//! `invalid-argument`, and a client can connect to the object's own address instead, which any
//! node forwards.

use super::forward::SECRET_HEADER;
use super::{Cluster, ClusterConfig};
use crate::names::ObjectIdentity;
use crate::runtime::{CallError, Called, Chain, Request, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use std::sync::LazyLock;
use std::time::{Duration, Instant};

/// The node-to-node route of stub calls.
pub const CALL_PATH: &str = "/_cluster/call";

/// A stub call as it travels between nodes.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct ForwardedCall {
    pub namespace: String,
    pub name: String,
    /// The objects waiting, outermost first, the callee last: `(namespace, name)`.
    pub chain: Vec<(String, String)>,
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
    /// Base64.
    pub body: String,
    pub client_address: Option<String>,
}

impl ForwardedCall {
    /// The call's request and chain, as the callee's node runs them.
    pub fn into_parts(self) -> Result<(Chain, Request), CallError> {
        let body = BASE64
            .decode(&self.body)
            .map_err(|e| CallError::InvalidArgument(format!("a forwarded call's body: {e}")))?;
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
        Ok((Chain::from_objects(objects), request))
    }
}

/// The callee's answer, or why the call failed.
#[derive(serde::Serialize, serde::Deserialize)]
pub enum CallAnswer {
    Response {
        status: u16,
        headers: Vec<(String, String)>,
        /// Base64.
        body: String,
    },
    Failed(CallError),
}

impl From<Result<Response, CallError>> for CallAnswer {
    fn from(result: Result<Response, CallError>) -> Self {
        match result {
            Ok(r) => CallAnswer::Response {
                status: r.status,
                headers: r.headers,
                body: BASE64.encode(&r.body),
            },
            Err(e) => CallAnswer::Failed(e),
        }
    }
}

/// One pool of connections to the other nodes for stub calls. No overall timeout: the callee's
/// node bounds the call's events itself.
static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .build()
        .expect("the call client's settings are valid")
});

impl Cluster {
    /// Makes a stub call to `callee`, which the node at `node_url` serves.
    pub async fn call(
        &self,
        node_url: &str,
        callee: &ObjectIdentity,
        chain: &Chain,
        request: Request,
    ) -> Result<Called, CallError> {
        let started = Instant::now();
        self.forwarded_calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let config: &ClusterConfig = &self.config;
        let call = ForwardedCall {
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
            body: BASE64.encode(&request.body),
            client_address: request.client_address,
        };
        let url = format!("{}{CALL_PATH}", node_url.trim_end_matches('/'));
        let sent = CLIENT
            .post(&url)
            .header(SECRET_HEADER, &config.secret)
            .json(&call)
            .send()
            .await;
        let answer = match sent {
            Ok(r) if r.status().is_success() => r.json::<CallAnswer>().await.map_err(|e| {
                CallError::Internal(format!("the callee's node ({url}) answered badly: {e}"))
            })?,
            Ok(r) => {
                return Err(CallError::Internal(format!(
                    "the callee's node ({url}) refused the call: {}",
                    r.status()
                )));
            }
            // Never sent: the callee's shard is moving, like an object with no room now.
            Err(e) if e.is_connect() => {
                return Err(CallError::Overloaded(format!(
                    "the callee's node ({url}) could not be reached: {e}; retry soon"
                )));
            }
            Err(e) => {
                return Err(CallError::Failed(format!(
                    "the callee's node ({url}) went away before answering: {e}"
                )));
            }
        };
        match answer {
            CallAnswer::Response {
                status,
                headers,
                body,
            } => Ok(Called {
                response: Response {
                    status,
                    headers,
                    body: BASE64.decode(body).map_err(|e| {
                        CallError::Internal(format!("the callee's answer's body: {e}"))
                    })?,
                },
                accepted: None,
                callee: started.elapsed(),
                handback: Duration::ZERO,
            }),
            CallAnswer::Failed(e) => Err(e),
        }
    }
}
