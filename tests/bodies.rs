//! Bodies that stream: an http-worker (the world `http-worker`; the test guest `files-front`, in
//! front of the class `file-store`) reads its request body as the client sends it and writes its
//! response as it goes, so the host holds neither. Every transfer is a deterministic pattern,
//! made as it is sent and checked byte for byte as it arrives (nothing is stored on disk), while
//! the host's resident memory is sampled.

mod support;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use support::{Host, client, json, rss};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{Mutex, MutexGuard};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// How much the host's resident memory may grow above idle while a body streams through it.
const RSS_BOUND: u64 = 100 * MIB;

// ---------------------------------------------------------------------------------------------
// The pattern, its bodies, and the memory sampler.
// ---------------------------------------------------------------------------------------------

/// The pattern's period: odd, so that no power-of-two chunk misplaced by fewer than `PERIOD`
/// chunks lines up with the pattern again.
const PERIOD: usize = (1 << 20) + 7;

/// A deterministic, non-repeating (within `PERIOD`) run of bytes, held twice over so that any
/// `PERIOD` bytes of it are one slice: making and checking a body costs no work per byte.
static PATTERN: LazyLock<Bytes> = LazyLock::new(|| {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut once = Vec::with_capacity(PERIOD);
    while once.len() < PERIOD {
        // xorshift64
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        once.extend_from_slice(&state.to_le_bytes());
    }
    once.truncate(PERIOD);
    let mut twice = once.clone();
    twice.extend_from_slice(&once);
    Bytes::from(twice)
});

/// The pattern's `len` bytes from offset `at` (`len` at most `PERIOD`).
fn pattern_at(at: u64, len: usize) -> Bytes {
    let start = (at % PERIOD as u64) as usize;
    PATTERN.slice(start..start + len)
}

/// Whether `data` is what the pattern holds from offset `at`.
fn is_pattern(mut at: u64, data: &[u8]) -> bool {
    data.chunks(PERIOD).all(|piece| {
        let ok = *piece == pattern_at(at, piece.len())[..];
        at += piece.len() as u64;
        ok
    })
}

/// A body of `total` bytes of the pattern, made as it is sent, 256 KiB at a time, with a
/// `content-length`.
struct PatternBody {
    sent: u64,
    total: u64,
}

impl PatternBody {
    fn new(total: u64) -> Self {
        PatternBody { sent: 0, total }
    }
}

impl Body for PatternBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = self.get_mut();
        if this.sent == this.total {
            return Poll::Ready(None);
        }
        let n = (this.total - this.sent).min(256 << 10) as usize;
        let frame = pattern_at(this.sent, n);
        this.sent += n as u64;
        Poll::Ready(Some(Ok(Frame::data(frame))))
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}

/// An HTTP client whose request bodies are patterns.
fn pattern_client() -> Client<HttpConnector, PatternBody> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Sends `body` and reads the (small) answer.
async fn send(method: &str, url: &str, body: PatternBody) -> (u16, Bytes) {
    let request = http::Request::builder()
        .method(method)
        .uri(url)
        .body(body)
        .unwrap();
    let response = pattern_client().request(request).await.expect("request");
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.expect("body");
    (status, body.to_bytes())
}

/// Downloads `url`, checking every byte against the pattern as it arrives; returns the status,
/// the `content-length` and how many bytes matched. Panics on a byte that does not match.
async fn download(url: &str) -> (u16, Option<u64>, u64) {
    let request = http::Request::get(url).body(PatternBody::new(0)).unwrap();
    let response = pattern_client().request(request).await.expect("request");
    let status = response.status().as_u16();
    let length = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .map(|v| v.to_str().unwrap().parse().unwrap());
    let mut body = response.into_body();
    let mut received = 0u64;
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the body arrives whole");
        if let Some(data) = frame.data_ref() {
            assert!(
                is_pattern(received, data),
                "the bytes at {received}..{} are not the pattern's",
                received + data.len() as u64
            );
            received += data.len() as u64;
        }
    }
    (status, length, received)
}

/// Samples a process's resident memory every 10 ms until stopped; keeps the peak.
struct Sampler {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let peak = Arc::new(AtomicU64::new(rss(pid)));
        let stop = Arc::new(AtomicBool::new(false));
        let (p, s) = (peak.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(rss(pid), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        Sampler { peak, stop, task }
    }

    /// The peak seen.
    async fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap();
        self.peak.load(Ordering::Relaxed)
    }
}

/// The host's resident memory once it has settled (jemalloc returns freed pages within about a
/// second).
async fn idle_rss(host: &Host) -> u64 {
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rss(host.pid())
}

/// The transfers that measure memory run one at a time, so that their figures are their own.
async fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::const_new(());
    SERIAL.lock().await
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / MIB as f64
}

// ---------------------------------------------------------------------------------------------
// The app.
// ---------------------------------------------------------------------------------------------

/// Deploys the app `files`: `files-front` on its routes, `file-store` bound as `FILES`, and
/// `allow` as its `[outbound] allow`.
async fn deploy(host: &Host, allow: &[String]) {
    let spec = json!({
        "routes": [
            "/files/",
            "/proxy",
            "/pattern",
            "/ignore",
            "/count",
            "/no-set",
            "/trap-before-head",
            "/trap-after-head",
        ],
        "objects": [{ "binding": "FILES", "namespace": "files", "public": false }],
        "outbound": allow,
    });
    let (status, body) = host
        .deploy_app(
            "files",
            spec,
            Some("files_front"),
            &[("files", "file_store")],
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

/// Uploads `bytes` of the pattern as the file `name`; the answer must count them.
async fn upload(host: &Host, name: &str, bytes: u64) {
    let url = host.at(&format!("/files/{name}"));
    let (status, answer) = send("PUT", &url, PatternBody::new(bytes)).await;
    let answer: Value = serde_json::from_slice(&answer)
        .unwrap_or_else(|_| panic!("{status}: {}", String::from_utf8_lossy(&answer)));
    assert_eq!(status, 200, "{answer}");
    let chunks = bytes.div_ceil(MIB);
    assert_eq!(answer, json!({ "chunks": chunks, "bytes": bytes }));
}

/// Downloads the file `name`, which must be `bytes` of the pattern.
async fn download_file(host: &Host, name: &str, bytes: u64) {
    let (status, length, received) = download(&host.at(&format!("/files/{name}"))).await;
    assert_eq!(status, 200);
    assert_eq!(length, Some(bytes));
    assert_eq!(received, bytes);
}

// ---------------------------------------------------------------------------------------------
// The tests.
// ---------------------------------------------------------------------------------------------

/// A gibibyte goes through the worker into an object (1,024 stub calls of 1 MiB, each stored as
/// one value) and back out, with the host's memory bounded both ways.
///
/// Flags: `--max-object-storage 2147483648`, since the file and its keys pass the default 1 GiB
/// an object may store; `--event-timeout 600`, since each transfer is one worker request, which
/// on a debug build of two cores takes longer than the default 30 s; `--storage-cache 32`, since
/// the database keeps the pages it writes in its cache, up to 1 GiB by default, which would grow
/// the host by the file's size whatever path the bytes took (what this test bounds is the path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_streams_through_a_worker_into_an_object_and_back() {
    let _serial = serial().await;
    let (host, _dir) = Host::start(&[
        "--max-object-storage",
        "2147483648",
        "--event-timeout",
        "600",
        "--storage-cache",
        "32",
    ]);
    deploy(&host, &[]).await;
    // A first file of an odd size (a short last chunk) warms both instances up.
    let small = 3 * MIB + 5;
    upload(&host, "small", small).await;
    download_file(&host, "small", small).await;
    let idle = idle_rss(&host).await;

    let sampler = Sampler::start(host.pid());
    let started = Instant::now();
    upload(&host, "big", GIB).await;
    let upload_time = started.elapsed();
    let upload_peak = sampler.stop().await;

    let sampler = Sampler::start(host.pid());
    let started = Instant::now();
    download_file(&host, "big", GIB).await;
    let download_time = started.elapsed();
    let download_peak = sampler.stop().await;

    let rate = |time: Duration| 1024.0 / time.as_secs_f64();
    println!(
        "1 GiB up in {upload_time:.1?} ({:.0} MiB/s), down in {download_time:.1?} ({:.0} MiB/s); \
         host RSS idle {:.0} MiB, peak above idle {:.1} MiB up, {:.1} MiB down",
        rate(upload_time),
        rate(download_time),
        mib(idle),
        mib(upload_peak.saturating_sub(idle)),
        mib(download_peak.saturating_sub(idle)),
    );
    assert!(
        upload_peak < idle + RSS_BOUND,
        "upload: {:.1} MiB above idle",
        mib(upload_peak - idle)
    );
    assert!(
        download_peak < idle + RSS_BOUND,
        "download: {:.1} MiB above idle",
        mib(download_peak - idle)
    );
}

/// The negative controls of the measurement above. Through the `worker` world (whole bodies, the
/// test guest `front`), the same gibibyte is refused with 413 at the default
/// `--max-request-body`, before the host holds it; and where the limit lets a body in (256 MiB
/// with `--max-request-body 268435456`), the host buffers it, and the same sampler sees its
/// resident memory pass the same bound: had the streaming path buffered, the test above would
/// have failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_with_whole_bodies_refuses_the_gibibyte_or_buffers_what_it_takes() {
    let _serial = serial().await;
    let spec = json!({ "routes": ["/var/"] });

    let (host, _dir) = Host::start(&[]);
    let (status, body) = host
        .deploy_app("whole", spec.clone(), Some("front"), &[])
        .await;
    assert_eq!(status, 200, "{body}");
    let idle = idle_rss(&host).await;
    let sampler = Sampler::start(host.pid());
    let mut tcp = support::raw::connect(&host).await;
    let head = format!("PUT /var/X HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n");
    // The head alone: the host refuses by the declared length, before reading a byte (and a
    // connection closed with unread bytes would be reset before its answer is read).
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = support::raw::read_to_close(&mut tcp)
        .await
        .expect("an answer");
    answer.assert_error(413, "body_too_large");
    let refused = sampler.stop().await.saturating_sub(idle);
    assert!(refused < RSS_BOUND, "{:.1} MiB above idle", mib(refused));
    drop(host);

    let (host, _dir) = Host::start(&["--max-request-body", "268435456"]);
    let (status, body) = host.deploy_app("whole", spec, Some("front"), &[]).await;
    assert_eq!(status, 200, "{body}");
    let idle = idle_rss(&host).await;
    let sampler = Sampler::start(host.pid());
    // Whatever the worker makes of it (a body this large passes its memory limit), the host has
    // read it whole first.
    let (status, _) = send("PUT", &host.at("/var/X"), PatternBody::new(256 * MIB)).await;
    let buffered = sampler.stop().await.saturating_sub(idle);
    println!(
        "whole bodies: 1 GiB refused with 413 ({:.1} MiB above idle); 256 MiB read whole, \
         answered {status}: {:.0} MiB above idle",
        mib(refused),
        mib(buffered),
    );
    assert!(
        buffered >= RSS_BOUND,
        "a buffered 256 MiB body must show: {:.1} MiB above idle",
        mib(buffered)
    );
}

/// An origin on 127.0.0.1 whose `/big` is `bytes` of the pattern, with a `content-length`.
async fn origin(bytes: u64) -> String {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/big",
        get(move || async move { axum::body::Body::new(PatternBody::new(bytes)) }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

/// The worker splices an origin's 256 MiB body into its response as it comes (through the
/// app's `[outbound] allow`, past the 16 MiB a whole outbound body may have); the client gets
/// every byte, and the host's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbound_body_is_spliced_into_the_response_without_being_held() {
    let _serial = serial().await;
    let bytes = 256 * MIB;
    let origin = origin(bytes).await;
    let (host, _dir) = Host::start(&["--event-timeout", "300"]);
    deploy(&host, std::slice::from_ref(&origin)).await;
    let url = format!("{origin}/big");
    let target = |url: &str| format!("{}?url={url}", host.at("/proxy"));
    // Warm up: the instance, and a connection's worth of buffers.
    let (status, _, _) = download(&target(&format!("{origin}/missing"))).await;
    assert_eq!(status, 404);
    let idle = idle_rss(&host).await;

    let sampler = Sampler::start(host.pid());
    let started = Instant::now();
    let (status, length, received) = download(&target(&url)).await;
    let took = started.elapsed();
    let peak = sampler.stop().await.saturating_sub(idle);
    println!(
        "256 MiB proxied in {took:.1?} ({:.0} MiB/s); host RSS {:.1} MiB above idle",
        256.0 / took.as_secs_f64(),
        mib(peak),
    );
    assert_eq!((status, length, received), (200, Some(bytes), bytes));
    assert!(peak < RSS_BOUND, "{:.1} MiB above idle", mib(peak));
}

/// A client that stops reading a large download holds up only its own request: the guest's
/// writes block, the event's deadline ends the request and cuts the body, others are served
/// meanwhile, and the host's memory stays bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_holds_up_only_its_own_request() {
    let (host, _dir, log) = support::start_capturing_stderr(&["--event-timeout", "5"], "warn");
    deploy(&host, &[]).await;
    let idle = idle_rss(&host).await;
    let sampler = Sampler::start(host.pid());

    let mut stalled = support::raw::connect(&host).await;
    let request = format!("GET /pattern?bytes={GIB} HTTP/1.1\r\nHost: x\r\n\r\n");
    stalled.write_all(request.as_bytes()).await.unwrap();
    let started = Instant::now();
    // Others are served while it stalls.
    let c = client();
    while started.elapsed() < Duration::from_secs(4) {
        let asked = Instant::now();
        let r = c.get(host.at("/pattern?bytes=65536")).send().await.unwrap();
        assert_eq!(r.status(), 200);
        let body = r.bytes().await.unwrap();
        assert_eq!(body.len(), 65536);
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The request ends by its deadline, 5 s after it started.
    support::poll(
        "the stalled request's end",
        Duration::from_secs(10),
        Duration::from_millis(100),
        || {
            let failed = log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("worker request failed") && l.contains("time limit"));
            async move { failed.then_some(()) }
        },
    )
    .await;
    let ended = started.elapsed();
    assert!(ended < Duration::from_secs(8), "{ended:?}");
    let peak = sampler.stop().await.saturating_sub(idle);

    // The client comes back: it gets what the connection held, then the cut.
    let mut received = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), async {
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            match stalled.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the connection is closed after the cut");
    let head_end = received.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let head = String::from_utf8_lossy(&received[..head_end]).to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 200"), "{head}");
    assert!(head.contains(&format!("content-length: {GIB}")), "{head}");
    let body = (received.len() - head_end) as u64;
    println!(
        "a stalled download: ended after {ended:.1?} with {:.1} MiB of 1,024 sent; host RSS \
         {:.1} MiB above idle",
        mib(body),
        mib(peak),
    );
    assert!(body < GIB, "the body is cut");
    assert!(peak < RSS_BOUND, "{:.1} MiB above idle", mib(peak));
}

/// A guest that fails before the head gets the usual JSON error; one that fails after it cuts
/// the body, so that the client never mistakes it for a whole response.
#[tokio::test]
async fn failures_before_the_head_answer_500_and_after_it_cut_the_body() {
    let (host, _dir) = Host::start(&[]);
    deploy(&host, &[]).await;
    let c = client();

    let (status, body) = json(c.get(host.at("/no-set"))).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], "object_error", "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("response-outparam.set"),
        "{body}"
    );

    let (status, body) = json(c.get(host.at("/trap-before-head"))).await;
    assert_eq!(status, 500, "{body}");
    assert_eq!(body["code"], "trap", "{body}");

    // hyper drops what it had buffered when a body fails, so the cut may come before the head
    // has left: either way the client sees an incomplete response, never a whole one.
    match c.get(host.at("/trap-after-head")).send().await {
        Ok(r) => {
            assert_eq!(r.status(), 200);
            assert!(r.bytes().await.is_err(), "the body is cut, not ended");
        }
        Err(e) => assert!(
            format!("{e:?}").contains("IncompleteMessage"),
            "the connection is cut: {e:?}"
        ),
    }

    // The worker still serves: a failed instance was dropped, not reused.
    let r = c.get(host.at("/pattern?bytes=1000")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(is_pattern_251(&r.bytes().await.unwrap()));
}

/// Whether `data` is the guest's `/pattern`: byte `i` is `i % 251`.
fn is_pattern_251(data: &[u8]) -> bool {
    data.iter().enumerate().all(|(i, &b)| b as usize == i % 251)
}

/// An instance that answered serves the next request, as any worker's; one that failed is
/// dropped.
#[tokio::test]
async fn an_instance_that_answered_is_reused_and_one_that_failed_is_not() {
    let (host, _dir) = Host::start(&[]);
    deploy(&host, &[]).await;
    let c = client();
    let mut counts = Vec::new();
    for path in ["/count", "/count", "/trap-before-head", "/count"] {
        let r = c.get(host.at(path)).send().await.unwrap();
        if r.status() == 200 {
            counts.push(r.text().await.unwrap());
        }
        // The instance goes back to the pool once `handle` has returned, just after the answer.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(counts, ["1", "2", "1"]);
}

/// A guest that answers without reading the body does not wait for the client to send it.
#[tokio::test]
async fn an_unread_body_does_not_hold_up_the_answer() {
    let (host, _dir) = Host::start(&[]);
    deploy(&host, &[]).await;
    let mut tcp = support::raw::connect(&host).await;
    let head = format!(
        "PUT /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        64 * MIB
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&pattern_at(0, 1024)).await.unwrap();
    let mut received = Vec::new();
    let answered = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buffer = [0u8; 4096];
        while !received.ends_with(b"ignored") {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buffer[..n]),
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&received);
    assert!(answered.is_ok(), "no answer while the body waits: {text:?}");
    assert!(
        text.starts_with("HTTP/1.1 200") && text.ends_with("ignored"),
        "{text:?}"
    );
}

/// wasi:http has no upgrades: a WebSocket handshake to an http-worker is an ordinary request,
/// answered as the guest answers it.
#[tokio::test]
async fn a_websocket_handshake_is_an_ordinary_request_to_an_http_worker() {
    let (host, _dir) = Host::start(&[]);
    deploy(&host, &[]).await;
    let refused = support::ws_try_connect(&host.ws("/pattern?bytes=5")).await;
    let Err(error) = refused else {
        panic!("an http-worker accepted a WebSocket");
    };
    assert!(error.starts_with("HTTP 200"), "{error}");
}

/// A worker's component may implement either worker world; one that implements neither is
/// refused with an error naming both.
#[tokio::test]
async fn a_worker_must_implement_one_of_the_two_worker_worlds() {
    let (host, _dir) = Host::start(&[]);
    let spec = json!({ "routes": ["/x"] });
    let (status, body) = host
        .deploy_app("wrong", spec, Some("file_store"), &[])
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["code"], "invalid_component", "{body}");
    let message = body["error"].as_str().unwrap();
    for world in [
        "dohost:object/worker@0.3.0",
        "dohost:object/http-worker@0.3.0",
    ] {
        assert!(message.contains(world), "{message}");
    }
}
