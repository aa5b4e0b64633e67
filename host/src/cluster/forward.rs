//! Forwarding a request to the node that owns its object, over pooled connections.
//!
//! The forwarded request carries the cluster's secret, the name of the node that forwarded it
//! and the client's address; the owner believes the last two only with the first, strips all
//! three, and serves the request as its own. A forwarded request is never forwarded again: if
//! the owner no longer owns the object (its shard just moved), it answers 503 `moved` with
//! `Retry-After`, and the client's retry finds the new owner.

use axum::body::Body;
use axum::http::{HeaderName, StatusCode, header};
use axum::response::Response;
use futures::TryStreamExt;
use std::sync::LazyLock;
use std::time::Duration;

/// The header that carries the cluster's secret on node-to-node requests.
pub const SECRET_HEADER: HeaderName = HeaderName::from_static("x-dohost-cluster-secret");

/// The header naming the node that forwarded a request; with the secret, it also carries the
/// client's address after a space.
pub const FORWARDED: HeaderName = HeaderName::from_static("x-dohost-forwarded");

/// One pool of connections to the other nodes, for the whole process: forwarded requests, stub
/// calls and deletes. No overall timeout: the receiving node bounds what it runs itself.
pub(super) static CLIENT: LazyLock<reqwest::Client> = LazyLock::new(|| {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .pool_idle_timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("the forwarding client's settings are valid")
});

/// Headers that belong to one connection, not to the request (RFC 9110 7.6.1).
const HOP_BY_HOP: [HeaderName; 5] = [
    header::CONNECTION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
];

/// Sends `request` to the node at `node_url` and streams its answer back. `from`: this node's
/// name; `client`: the client's address.
pub async fn forward(
    node_url: &str,
    request: axum::extract::Request,
    secret: &str,
    from: &str,
    client: Option<String>,
) -> Result<Response, (StatusCode, String)> {
    let (parts, body) = request.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{path}", node_url.trim_end_matches('/'));
    let mut headers = parts.headers;
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    headers.remove(header::HOST);
    headers.insert(
        SECRET_HEADER,
        secret
            .parse()
            .map_err(|_| bad_gateway("the cluster secret is not a header value"))?,
    );
    let forwarded = format!("{from} {}", client.unwrap_or_default());
    headers.insert(
        FORWARDED,
        forwarded
            .trim_end()
            .parse()
            .map_err(|_| bad_gateway("the node name is not a header value"))?,
    );
    let answer = CLIENT
        .request(parts.method, &url)
        .headers(headers)
        .body(reqwest::Body::wrap_stream(body.into_data_stream()))
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                // Never sent: nothing happened, and the retry finds the shard's next owner.
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    format!("the object's node could not be reached ({url}): {e}; retry soon"),
                )
            } else {
                // Sent, and then the node went away: the request may have been served.
                (
                    StatusCode::BAD_GATEWAY,
                    format!("the object's node ({url}) went away before answering: {e}"),
                )
            }
        })?;
    let mut response = Response::builder().status(answer.status());
    for (name, value) in answer.headers() {
        if !HOP_BY_HOP.contains(name) {
            response = response.header(name, value);
        }
    }
    let stream = answer.bytes_stream().map_err(std::io::Error::other);
    response
        .body(Body::from_stream(stream))
        .map_err(|e| bad_gateway(&e.to_string()))
}

fn bad_gateway(why: &str) -> (StatusCode, String) {
    (
        StatusCode::BAD_GATEWAY,
        format!("forwarding to the object's node: {why}"),
    )
}

/// Forwards a WebSocket handshake to the node at `node_url` and, once both ends have upgraded,
/// relays the bytes between the client and the owner until either closes. A plain connection per
/// socket: an upgraded connection is the socket's alone.
pub async fn forward_upgrade(
    node_url: &str,
    mut request: axum::extract::Request,
    secret: &str,
    from: &str,
    client: Option<String>,
) -> Result<Response, (StatusCode, String)> {
    let unreachable = |e: &dyn std::fmt::Display| {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the object's node could not be reached ({node_url}): {e}; retry soon"),
        )
    };
    let authority = node_url
        .strip_prefix("http://")
        .ok_or_else(|| bad_gateway("a node's URL is not http://"))?
        .trim_end_matches('/')
        .to_owned();
    let client_side = hyper::upgrade::on(&mut request);
    let (mut parts, _) = request.into_parts();
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts.headers.insert(
        header::HOST,
        authority
            .parse()
            .map_err(|_| bad_gateway("a node's address is not a header value"))?,
    );
    parts.headers.insert(
        SECRET_HEADER,
        secret
            .parse()
            .map_err(|_| bad_gateway("the cluster secret is not a header value"))?,
    );
    let forwarded = format!("{from} {}", client.unwrap_or_default());
    parts.headers.insert(
        FORWARDED,
        forwarded
            .trim_end()
            .parse()
            .map_err(|_| bad_gateway("the node name is not a header value"))?,
    );
    let stream = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&authority),
    )
    .await
    .map_err(|e| unreachable(&e))?
    .map_err(|e| unreachable(&e))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| unreachable(&e))?;
    tokio::spawn(connection.with_upgrades());
    let outgoing =
        axum::http::Request::from_parts(parts, http_body_util::Empty::<bytes::Bytes>::new());
    let mut answer = sender
        .send_request(outgoing)
        .await
        .map_err(|e| unreachable(&e))?;
    let status = answer.status();
    let node_side = hyper::upgrade::on(&mut answer);
    let (answer_parts, answer_body) = answer.into_parts();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        // Refused (the object said no, or it moved): the answer as it is.
        return Ok(Response::from_parts(answer_parts, Body::new(answer_body)));
    }
    tokio::spawn(async move {
        let (Ok(client), Ok(node)) = tokio::join!(client_side, node_side) else {
            return;
        };
        let (mut client, mut node) = (
            hyper_util::rt::TokioIo::new(client),
            hyper_util::rt::TokioIo::new(node),
        );
        let _ = tokio::io::copy_bidirectional(&mut client, &mut node).await;
    });
    Ok(Response::from_parts(answer_parts, Body::empty()))
}
