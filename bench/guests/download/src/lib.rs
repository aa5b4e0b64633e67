//! The benchmark's streamed download, like workerd's (`bench/workerd/worker.js`): an http-worker
//! (the world `http-worker`) on `/d/`, where `GET /d/{n}` answers `n` bytes with a
//! `content-length`, written in pieces as large as the host takes at once. Nothing is stored or
//! read: the row measures the streaming path alone.

use dohost_sdk::wasip2::http::types::{
    Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use dohost_sdk::{Env, HttpWorker};

/// The bytes written, over and over.
static BLOCK: [u8; 64 << 10] = [b'x'; 64 << 10];

struct Download;

impl HttpWorker for Download {
    fn handle(_: &Env, request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let Some(bytes) = path.strip_prefix("/d/").and_then(|n| n.parse::<u64>().ok()) else {
            let response = OutgoingResponse::new(Fields::new());
            response.set_status_code(404).unwrap();
            let body = response.body().unwrap();
            ResponseOutparam::set(response_out, Ok(response));
            OutgoingBody::finish(body, None).unwrap();
            return;
        };
        let length = bytes.to_string();
        let headers = Fields::from_list(&[("content-length".into(), length.into_bytes())]).unwrap();
        let response = OutgoingResponse::new(headers);
        let body = response.body().unwrap();
        ResponseOutparam::set(response_out, Ok(response));
        let output = body.write().unwrap();
        let pollable = output.subscribe();
        let mut left = bytes;
        while left > 0 {
            pollable.block();
            // A client that went away ends the writes.
            let Ok(permitted) = output.check_write() else {
                return;
            };
            let n = permitted.min(left).min(BLOCK.len() as u64) as usize;
            if n > 0 && output.write(&BLOCK[..n]).is_err() {
                return;
            }
            left -= n as u64;
        }
        let _ = output.blocking_flush();
        drop(pollable);
        drop(output);
        let _ = OutgoingBody::finish(body, None);
    }
}

dohost_sdk::http_worker!(Download);
