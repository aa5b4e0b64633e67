//! A test http-worker (the world `http-worker`), whose bodies stream:
//!
//! - `PUT /files/{name}` reads the request body as it comes and stores it in chunks of 1 MiB in
//!   the object `{name}` of the class bound as `FILES` (`file-store`), one stub call per chunk
//!   (`PUT /chunk/{i}`, then `PUT /done?chunks=N&bytes=B`); answers `{"chunks": N, "bytes": B}`.
//! - `GET /files/{name}` streams the chunks back, one stub call per chunk, each written to the
//!   response body as it comes, with a `content-length`.
//! - `GET /proxy?url=URL` fetches URL (`http://` only) with outbound HTTP and splices the origin's
//!   body into the response, which is never in the guest's memory.
//! - `GET /pattern?bytes=N` answers N bytes of the test pattern (byte `i` is `i % 251`), with a
//!   `content-length`.
//! - `PUT /ignore` answers `ignored` without reading the body.
//! - `GET /count` answers how many `/count` requests this instance has served, this one included.
//! - `GET /no-set` returns without setting a response; `GET /trap-before-head` panics;
//!   `GET /trap-after-head` sends the head and part of a body, then panics.

use dohost_sdk::wasip2::http::outgoing_handler;
use dohost_sdk::wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};
use dohost_sdk::wasip2::io::streams::{InputStream, OutputStream, StreamError};
use dohost_sdk::{Env, HttpWorker, Request, Stub};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// The size of a stored chunk: one stub call, one storage value.
const CHUNK: usize = 1 << 20;

struct Files;

impl HttpWorker for Files {
    fn handle(env: &Env, request: IncomingRequest, response_out: ResponseOutparam) {
        let target = request.path_with_query().unwrap_or_default();
        let (path, query) = target.split_once('?').unwrap_or((target.as_str(), ""));
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        match (request.method(), segments.as_slice()) {
            (Method::Put, ["files", name]) => {
                upload(env.stub("FILES", name), request, response_out)
            }
            (Method::Get, ["files", name]) => download(env.stub("FILES", name), response_out),
            (Method::Get, ["proxy"]) => match param(query, "url") {
                Some(url) => proxy(&url, response_out),
                None => respond(response_out, 400, "missing ?url="),
            },
            (Method::Get, ["pattern"]) => {
                match param(query, "bytes").and_then(|b| b.parse().ok()) {
                    Some(bytes) => pattern(bytes, response_out),
                    None => respond(response_out, 400, "missing ?bytes="),
                }
            }
            (Method::Put, ["ignore"]) => respond(response_out, 200, "ignored"),
            (Method::Get, ["count"]) => {
                static SERVED: AtomicU64 = AtomicU64::new(0);
                let served = SERVED.fetch_add(1, Ordering::Relaxed) + 1;
                respond(response_out, 200, &served.to_string())
            }
            (Method::Get, ["no-set"]) => drop(response_out),
            (Method::Get, ["trap-before-head"]) => {
                panic!("files-front was asked to fail before the head")
            }
            (Method::Get, ["trap-after-head"]) => {
                let (_body, mut output) = start(response_out, 200, &[]);
                output.write_all(b"the beginning of a body").unwrap();
                output.blocking_flush().unwrap();
                panic!("files-front was asked to fail after the head");
            }
            _ => respond(response_out, 404, "files-front: no such route"),
        }
    }
}

/// Stores the request body in chunks, one stub call each.
fn upload(stub: Stub, request: IncomingRequest, response_out: ResponseOutparam) {
    let incoming = request.consume().unwrap();
    let input = incoming.stream().unwrap();
    let (mut chunks, mut bytes) = (0u64, 0u64);
    let mut chunk = Vec::with_capacity(CHUNK);
    loop {
        let read = input.blocking_read((CHUNK - chunk.len()) as u64);
        let ended = match read {
            Ok(data) => {
                chunk.extend_from_slice(&data);
                false
            }
            Err(StreamError::Closed) => true,
            Err(StreamError::LastOperationFailed(e)) => {
                let message = format!("reading the body: {}", e.to_debug_string());
                return respond(response_out, 400, &message);
            }
        };
        if chunk.len() == CHUNK || (ended && !chunk.is_empty()) {
            let body = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
            bytes += body.len() as u64;
            let put = Request::new("PUT", &format!("/chunk/{chunks}")).with_body(body);
            if let Err(message) = call(&stub, put) {
                return respond(response_out, 502, &message);
            }
            chunks += 1;
        }
        if ended {
            break;
        }
    }
    let done = Request::new("PUT", &format!("/done?chunks={chunks}&bytes={bytes}"));
    match call(&stub, done) {
        Ok(meta) => respond_json(response_out, &meta),
        Err(message) => respond(response_out, 502, &message),
    }
}

/// Streams the stored chunks back, one stub call each, written out as each arrives.
fn download(stub: Stub, response_out: ResponseOutparam) {
    let meta = match call(&stub, Request::new("GET", "/meta")) {
        Ok(meta) => meta,
        Err(message) => return respond(response_out, 404, &message),
    };
    let meta: serde_json::Value = serde_json::from_slice(&meta).unwrap();
    let (chunks, bytes) = (
        meta["chunks"].as_u64().unwrap(),
        meta["bytes"].as_u64().unwrap(),
    );
    let length = bytes.to_string();
    let (body, mut output) = start(response_out, 200, &[("content-length", length.as_str())]);
    for i in 0..chunks {
        // The head is sent: a failure from here on can only cut the body, which a panic does.
        let chunk = call(&stub, Request::new("GET", &format!("/chunk/{i}"))).unwrap();
        if output.write_all(&chunk).is_err() {
            // The client went away.
            return;
        }
    }
    finish(body, output);
}

/// Fetches `url` and splices the origin's body into the response as it comes.
fn proxy(url: &str, response_out: ResponseOutparam) {
    let Some(rest) = url.strip_prefix("http://") else {
        return respond(response_out, 400, "only http:// URLs");
    };
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let request = OutgoingRequest::new(Fields::new());
    request.set_scheme(Some(&Scheme::Http)).unwrap();
    request.set_authority(Some(authority)).unwrap();
    request.set_path_with_query(Some(path)).unwrap();
    let future = match outgoing_handler::handle(request, None) {
        Ok(future) => future,
        Err(code) => return respond(response_out, 502, &format!("{code:?}")),
    };
    future.subscribe().block();
    let origin = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return respond(response_out, 502, &format!("{code:?}")),
        other => panic!("the response future gave {other:?}"),
    };
    let length = origin
        .headers()
        .get("content-length")
        .into_iter()
        .next()
        .map(|v| String::from_utf8(v).unwrap());
    let headers: Vec<(&str, &str)> = length
        .iter()
        .map(|l| ("content-length", l.as_str()))
        .collect();
    let incoming = origin.consume().unwrap();
    let input: InputStream = incoming.stream().unwrap();
    let (body, output) = start(response_out, origin.status(), &headers);
    loop {
        match output.blocking_splice(&input, CHUNK as u64) {
            Ok(_) => {}
            // The origin's body ended (or the client went away, and the body's end fails).
            Err(StreamError::Closed) => break,
            Err(StreamError::LastOperationFailed(e)) => {
                panic!("splicing the origin's body: {}", e.to_debug_string())
            }
        }
    }
    drop(input);
    finish(body, output);
}

/// Answers `bytes` bytes of the test pattern, written 64 KiB at a time.
fn pattern(bytes: u64, response_out: ResponseOutparam) {
    let length = bytes.to_string();
    let (body, mut output) = start(response_out, 200, &[("content-length", length.as_str())]);
    let block: Vec<u8> = (0..64u64 << 10).map(|i| (i % 251) as u8).collect();
    let mut sent = 0u64;
    while sent < bytes {
        // Offsets stay in step with the pattern: 64 KiB is no multiple of 251.
        let at = (sent % 251) as usize;
        let n = (bytes - sent).min((block.len() - at) as u64) as usize;
        if output.write_all(&block[at..at + n]).is_err() {
            return;
        }
        sent += n as u64;
    }
    finish(body, output);
}

/// Calls the object; its body if it answered 2xx, or why not.
fn call(stub: &Stub, request: Request) -> Result<Vec<u8>, String> {
    match stub.fetch(request) {
        Ok(response) if (200..300).contains(&response.status()) => Ok(response.body().to_vec()),
        Ok(response) => Err(format!(
            "the object answered {}: {}",
            response.status(),
            String::from_utf8_lossy(response.body())
        )),
        Err(e) => Err(e.to_string()),
    }
}

/// Sends the response head; the body is written to the stream afterwards.
fn start(
    response_out: ResponseOutparam,
    status: u16,
    headers: &[(&str, &str)],
) -> (OutgoingBody, OutputStream) {
    let fields: Vec<(String, Vec<u8>)> = headers
        .iter()
        .map(|(name, value)| (name.to_string(), value.as_bytes().to_vec()))
        .collect();
    let response = OutgoingResponse::new(Fields::from_list(&fields).unwrap());
    response.set_status_code(status).unwrap();
    let body = response.body().unwrap();
    ResponseOutparam::set(response_out, Ok(response));
    let output = body.write().unwrap();
    (body, output)
}

/// Ends a body that was written whole.
fn finish(body: OutgoingBody, output: OutputStream) {
    // Once a body has its `content-length`, the host may have sent it and closed the stream.
    let _ = output.blocking_flush();
    drop(output);
    OutgoingBody::finish(body, None).unwrap();
}

/// A whole answer with a text body.
fn respond(response_out: ResponseOutparam, status: u16, text: &str) {
    let length = text.len().to_string();
    let (body, mut output) = start(response_out, status, &[("content-length", length.as_str())]);
    output.write_all(text.as_bytes()).unwrap();
    finish(body, output);
}

/// A whole answer with a JSON body.
fn respond_json(response_out: ResponseOutparam, json: &[u8]) {
    let length = json.len().to_string();
    let headers = [
        ("content-type", "application/json"),
        ("content-length", length.as_str()),
    ];
    let (body, mut output) = start(response_out, 200, &headers);
    output.write_all(json).unwrap();
    finish(body, output);
}

/// The first query parameter called `name`, undecoded but for `%3A` and `%2F` (enough for the
/// URLs the tests pass).
fn param(query: &str, name: &str) -> Option<String> {
    query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.replace("%3A", ":").replace("%2F", "/"))
}

dohost_sdk::http_worker!(Files);
