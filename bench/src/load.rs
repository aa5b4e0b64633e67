//! HTTP load: one keep-alive HTTP/1.1 connection per virtual client (hyper 1's client
//! connection over a `TcpStream`), each sending its next request as soon as the previous answer
//! is read; latencies in an HDR histogram. And the HTTP scenarios built on it.

use crate::{Kind, Memory, Settings, Target, median_ms, nonce, percentile_ms};
use anyhow::{Context, Result, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use rand::SeedableRng;
use rand::rngs::SmallRng;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// Longest wait for one answer before the request counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One client connection: keep-alive HTTP/1.1, reopened if the server closes it.
pub struct HttpConn {
    addr: SocketAddr,
    host: String,
    sender: Option<SendRequest<Full<Bytes>>>,
}

impl HttpConn {
    /// A connection to `addr`, opened at the first request.
    pub fn new(addr: SocketAddr) -> Self {
        HttpConn {
            addr,
            host: addr.to_string(),
            sender: None,
        }
    }

    async fn open(addr: SocketAddr) -> Result<SendRequest<Full<Bytes>>> {
        let stream = TcpStream::connect(addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(sender)
    }

    /// Sends one request and reads the whole answer. After an error the connection is dropped
    /// and the next request opens a new one.
    pub async fn send(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        self.send_within(REQUEST_TIMEOUT, method, path, headers, body)
            .await
    }

    /// [`Self::send`], waiting at most `wait` for the answer.
    async fn send_within(
        &mut self,
        wait: Duration,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        let result = tokio::time::timeout(wait, self.send_inner(method, path, headers, body))
            .await
            .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {wait:?}")));
        if result.is_err() {
            self.sender = None;
        }
        result
    }

    async fn send_inner(
        &mut self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Result<(StatusCode, Bytes)> {
        if self.sender.as_ref().is_none_or(|s| s.is_closed()) {
            self.sender = Some(Self::open(self.addr).await?);
        }
        let sender = self.sender.as_mut().expect("opened above");
        if sender.ready().await.is_err() {
            // Closed by the server between requests (e.g. `connection: close`): reopen once.
            self.sender = Some(Self::open(self.addr).await?);
        }
        let sender = self.sender.as_mut().expect("opened above");
        let mut request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(header::HOST, &self.host);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if body.is_empty() && (method == Method::POST || method == Method::PUT) {
            request = request.header(header::CONTENT_LENGTH, "0");
        }
        let response = sender.send_request(request.body(Full::new(body))?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}

/// One request on a fresh connection: for the admin API and probes.
pub async fn request_once(
    addr: SocketAddr,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Result<(StatusCode, Bytes)> {
    HttpConn::new(addr).send(method, path, headers, body).await
}

/// [`request_once`] for a deploy, whose answer waits for the component to compile: a
/// JavaScript component in a debug build under load took more than [`REQUEST_TIMEOUT`].
pub async fn deploy_once(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
    component: Bytes,
) -> Result<(StatusCode, Bytes)> {
    const DEPLOY_TIMEOUT: Duration = Duration::from_secs(120);
    HttpConn::new(addr)
        .send_within(DEPLOY_TIMEOUT, Method::PUT, path, headers, component)
        .await
}

/// What one load run measured.
#[derive(Clone, Debug)]
pub struct LoadResult {
    /// Requests answered with a 2xx inside the measured window.
    pub ok: u64,
    /// Requests that failed (error, timeout or non-2xx) inside the window.
    pub failed: u64,
    /// The measured window.
    pub window: Duration,
    /// Every 2xx answer of the whole run, warm-up, setup and the window's edges included: for
    /// an increment, the writes acknowledged, which its fsync count is divided by.
    pub acknowledged: u64,
    /// Latencies of the successful requests, in microseconds.
    pub histogram: Histogram<u64>,
}

impl LoadResult {
    /// Successful requests per second.
    pub fn rps(&self) -> f64 {
        self.ok as f64 / self.window.as_secs_f64()
    }

    /// Median latency in milliseconds.
    pub fn p50_ms(&self) -> f64 {
        self.histogram.value_at_quantile(0.50) as f64 / 1000.0
    }

    /// 99th percentile latency in milliseconds.
    pub fn p99_ms(&self) -> f64 {
        self.histogram.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// A new latency histogram: 1 µs to 2 minutes, 3 significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("valid histogram bounds")
}

/// Runs `conns` connections, each sending the request `next(connection, rng)` describes as soon
/// as the previous one is answered: first for `s.warmup` (not measured), then for
/// `s.duration`, the window. A request counts if it both started and ended inside the window;
/// at most `s.max_requests` are measured.
pub async fn run<F>(target: &Target, conns: usize, s: &Settings, next: F) -> Result<LoadResult>
where
    F: Fn(usize, &mut SmallRng) -> (Method, String) + Send + Sync + 'static,
{
    let next = Arc::new(next);
    let start = Instant::now() + s.warmup;
    let end = start + s.duration;
    let measured = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(conns);
    for c in 0..conns {
        let (next, measured, addr, max) =
            (next.clone(), measured.clone(), target.addr, s.max_requests);
        tasks.push(tokio::spawn(async move {
            let mut rng = SmallRng::seed_from_u64(c as u64 + 1);
            let mut conn = HttpConn::new(addr);
            let mut histogram = histogram();
            let (mut ok, mut failed, mut acknowledged) = (0u64, 0u64, 0u64);
            loop {
                if Instant::now() >= end || measured.load(Ordering::Relaxed) >= max {
                    break;
                }
                let (method, path) = next(c, &mut rng);
                let t0 = Instant::now();
                let result = conn.send(method, &path, &[], Bytes::new()).await;
                let t1 = Instant::now();
                let counted = t0 >= start && t1 <= end;
                match result {
                    Ok((status, _)) if status.is_success() => {
                        acknowledged += 1;
                        if counted {
                            ok += 1;
                            measured.fetch_add(1, Ordering::Relaxed);
                            let micros = (t1 - t0).as_micros().max(1) as u64;
                            histogram.saturating_record(micros);
                        }
                    }
                    _ => {
                        if counted {
                            failed += 1;
                        }
                        if result.is_err() {
                            // Do not spin on a refused connection.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
            }
            (ok, failed, acknowledged, histogram)
        }));
    }
    let mut total = LoadResult {
        ok: 0,
        failed: 0,
        window: s.duration,
        acknowledged: 0,
        histogram: histogram(),
    };
    for task in tasks {
        let (ok, failed, acknowledged, histogram) = task.await?;
        total.ok += ok;
        total.failed += failed;
        total.acknowledged += acknowledged;
        total.histogram.add(&histogram)?;
    }
    Ok(total)
}

/// Scenario 1: durable increments (`POST /counter/bench/`) on one object over `conns`
/// connections.
pub async fn increment_one(target: &Target, conns: usize, s: &Settings) -> Result<LoadResult> {
    run(target, conns, s, |_, _| {
        (Method::POST, "/counter/bench/".into())
    })
    .await
}

/// The path of the counter written in JavaScript on the Cloudflare API: on dohost the build of
/// examples/js/counter, on workerd its own `Counter`, which is the same class.
fn js_counter(target: &Target) -> &'static str {
    match target.kind {
        Kind::Dohost { .. } => "/js-counter",
        Kind::Workerd => "/counter",
    }
}

/// `POST` increments of the JavaScript counter on one object over `conns` connections.
pub async fn increment_js(target: &Target, conns: usize, s: &Settings) -> Result<LoadResult> {
    let path = format!("{}/bench/", js_counter(target));
    run(target, conns, s, move |_, _| (Method::POST, path.clone())).await
}

/// Scenario 2: read-only `GET /counter/bench/` on one object over `conns` connections.
pub async fn read_one(target: &Target, conns: usize, s: &Settings) -> Result<LoadResult> {
    run(target, conns, s, |_, _| {
        (Method::GET, "/counter/bench/".into())
    })
    .await
}

/// Sends one request to each of `paths`, over `conns` connections; every one must answer 200.
/// Setup, not measurement.
pub async fn touch_all(
    target: &Target,
    conns: usize,
    method: Method,
    paths: Vec<String>,
) -> Result<()> {
    let count = paths.len();
    let paths = Arc::new(paths);
    let next = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..conns.clamp(1, count.max(1)) {
        let (paths, next, failed, method, addr) = (
            paths.clone(),
            next.clone(),
            failed.clone(),
            method.clone(),
            target.addr,
        );
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(addr);
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(path) = paths.get(i) else { break };
                match conn.send(method.clone(), path, &[], Bytes::new()).await {
                    Ok((status, _)) if status == 200 => {}
                    _ => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let failed = failed.load(Ordering::Relaxed);
    if failed > 0 {
        bail!("{failed} of {count} requests failed");
    }
    Ok(())
}

/// Scenario 3: durable increments on objects drawn at random from a fixed set of
/// `s.spread_objects` names (`spread-0` ...), over `conns` connections. Each object gets one
/// `POST` first (setup, not measured), so that the window measures writes to existing objects
/// rather than their creation, which the cold-start scenario covers.
pub async fn increment_spread(target: &Target, conns: usize, s: &Settings) -> Result<LoadResult> {
    let objects = s.spread_objects.max(1);
    let paths = (0..objects)
        .map(|i| format!("/counter/spread-{i}/"))
        .collect();
    touch_all(target, conns, Method::POST, paths)
        .await
        .context("creating the objects")?;
    let mut load = run(target, conns, s, move |_, rng| {
        let i = rand::Rng::random_range(rng, 0..objects);
        (Method::POST, format!("/counter/spread-{i}/"))
    })
    .await?;
    // touch_all fails unless every one of its writes was acknowledged.
    load.acknowledged += objects as u64;
    Ok(load)
}

/// What the scenario past the live-instance cap measured: the load, and what the server holds
/// at its end.
pub struct Fresh {
    pub load: LoadResult,
    pub rss_kib: u64,
    pub maps: u64,
}

/// Scenario 3b: durable increments on objects drawn at random from `s.fresh_objects` names
/// (`fresh-<run>-0` ...), over `conns` connections, none created beforehand (`<run>` is new
/// each call): far past what a server keeps live, so most requests wake (or create) a sleeping
/// object and put another to sleep. Then the server's RSS and memory mappings. `shared`: on
/// dohost, the counter registered as a shared class (`examples/shared-counter`); workerd always
/// serves a class's objects from one isolate, so it gets its counter either way.
pub async fn increment_fresh(
    target: &Target,
    conns: usize,
    s: &Settings,
    shared: bool,
) -> Result<Fresh> {
    let objects = s.fresh_objects.max(1);
    let run_id = nonce();
    let namespace = match target.kind {
        Kind::Dohost { .. } if shared => "shared-counter",
        _ => "counter",
    };
    let load = run(target, conns, s, move |_, rng| {
        let i = rand::Rng::random_range(rng, 0..objects);
        (Method::POST, format!("/{namespace}/fresh-{run_id}-{i}/"))
    })
    .await?;
    Ok(Fresh {
        load,
        rss_kib: crate::rss_kib(target.pid)?,
        maps: crate::map_count(target.pid)?,
    })
}

/// The ceiling: `GET /hello/x/` over `conns` connections. On dohost that is the `hello` object
/// `x` (answers "ok", no storage); on workerd a stateless worker answering "ok".
pub async fn hello(target: &Target, conns: usize, s: &Settings) -> Result<LoadResult> {
    run(target, conns, s, |_, _| (Method::GET, "/hello/x/".into())).await
}

/// Increments `/counter/bench/` through the front worker (`/w/counter/bench/`) over `conns`
/// connections: workerd's every request takes that path, so this is the like-for-like row.
pub async fn increment_through_worker(
    target: &Target,
    conns: usize,
    s: &Settings,
) -> Result<LoadResult> {
    run(target, conns, s, |_, _| {
        (Method::POST, "/w/counter/bench/".into())
    })
    .await
}

/// Increments through the front worker and a relay object, which calls the counter of the same
/// name through a stub: worker → object → object.
pub async fn increment_through_relay(
    target: &Target,
    conns: usize,
    s: &Settings,
) -> Result<LoadResult> {
    run(target, conns, s, |_, _| {
        (Method::POST, "/w/relay/bench/".into())
    })
    .await
}

/// Latencies of one warm increment three ways, taken in turn on one connection: straight to the
/// counter, through the front worker, and through the worker and a relay object.
pub struct Hops {
    pub direct: Vec<Duration>,
    pub worker: Vec<Duration>,
    pub relay: Vec<Duration>,
}

impl Hops {
    /// What the front worker adds to a warm increment: the difference of the medians, µs.
    pub fn worker_us(&self) -> f64 {
        (median_ms(&self.worker) - median_ms(&self.direct)) * 1000.0
    }

    /// What a stub call between two objects adds to the callee's own event: the difference of
    /// the medians through the relay and through the worker alone, µs.
    pub fn stub_us(&self) -> f64 {
        (median_ms(&self.relay) - median_ms(&self.worker)) * 1000.0
    }

    pub fn direct_ms(&self) -> f64 {
        median_ms(&self.direct)
    }

    pub fn worker_ms(&self) -> f64 {
        median_ms(&self.worker)
    }

    pub fn relay_ms(&self) -> f64 {
        median_ms(&self.relay)
    }
}

/// `s.cold_objects` × 10 rounds of [`Hops`], interleaved so that noise falls on all three alike.
pub async fn hops(target: &Target, s: &Settings) -> Result<Hops> {
    let mut conn = HttpConn::new(target.addr);
    let mut hops = Hops {
        direct: Vec::new(),
        worker: Vec::new(),
        relay: Vec::new(),
    };
    let paths = ["/counter/hops/", "/w/counter/hops/", "/w/relay/hops/"];
    // Wake all three paths before measuring.
    for path in paths {
        conn.send(Method::POST, path, &[], Bytes::new()).await?;
    }
    for _ in 0..s.cold_objects * 10 {
        let samples = [&mut hops.direct, &mut hops.worker, &mut hops.relay];
        for (samples, path) in samples.into_iter().zip(paths) {
            let t0 = Instant::now();
            let (status, body) = conn.send(Method::POST, path, &[], Bytes::new()).await?;
            samples.push(t0.elapsed());
            if status != 200 {
                bail!("POST {path}: {status} {}", String::from_utf8_lossy(&body));
            }
        }
    }
    Ok(hops)
}

/// What the cold-start scenario measured.
#[derive(Clone, Debug)]
pub struct ColdStart {
    /// Latency of the first request to each never-seen object.
    pub cold: Vec<Duration>,
    /// Latency of the second request to the same object, right after.
    pub warm: Vec<Duration>,
    /// Latency of a `GET /hello/x/` (the trivial handler) right after that, on the same
    /// connection: the ceiling the warm figure is read against.
    pub trivial: Vec<Duration>,
}

impl ColdStart {
    /// Median first-request latency, ms.
    pub fn cold_ms(&self) -> f64 {
        median_ms(&self.cold)
    }
    /// Median second-request latency, ms.
    pub fn warm_ms(&self) -> f64 {
        median_ms(&self.warm)
    }
    /// Median trivial-handler latency, ms.
    pub fn trivial_ms(&self) -> f64 {
        median_ms(&self.trivial)
    }
    /// How many times the trivial handler's latency a warm request takes (medians).
    pub fn warm_over_trivial(&self) -> f64 {
        self.warm_ms() / self.trivial_ms()
    }
    /// 99th percentile first-request latency, ms.
    pub fn cold_p99_ms(&self) -> f64 {
        percentile_ms(&self.cold, 99.0)
    }
}

/// Scenario 4: for each of `s.cold_objects` never-seen counter objects in turn, on one
/// keep-alive connection: `GET` it (cold: the object is created), then `GET` it again (warm),
/// then `GET /hello/x/` (the trivial handler).
pub async fn cold_start(target: &Target, s: &Settings) -> Result<ColdStart> {
    cold_start_of(target, s, "/counter").await
}

/// [`cold_start`] of the JavaScript counter.
pub async fn cold_start_js(target: &Target, s: &Settings) -> Result<ColdStart> {
    cold_start_of(target, s, js_counter(target)).await
}

async fn cold_start_of(target: &Target, s: &Settings, counter: &str) -> Result<ColdStart> {
    let run = nonce();
    let mut conn = HttpConn::new(target.addr);
    // Open the connection and wake the code path once, outside the measurements.
    conn.send(
        Method::GET,
        &format!("{counter}/cold-{run}-warmup/"),
        &[],
        Bytes::new(),
    )
    .await?;
    let mut result = ColdStart {
        cold: Vec::new(),
        warm: Vec::new(),
        trivial: Vec::new(),
    };
    for i in 0..s.cold_objects {
        let object = format!("{counter}/cold-{run}-{i}/");
        let requests = [
            (&mut result.cold, object.as_str()),
            (&mut result.warm, object.as_str()),
            (&mut result.trivial, "/hello/x/"),
        ];
        for (samples, path) in requests {
            let t0 = Instant::now();
            let (status, body) = conn.send(Method::GET, path, &[], Bytes::new()).await?;
            samples.push(t0.elapsed());
            if status != 200 {
                bail!("GET {path}: {status} {}", String::from_utf8_lossy(&body));
            }
        }
    }
    Ok(result)
}

/// Scenario 7b: memory per object. Waits until the server is idle, reads its RSS, sends one
/// `POST` to each of `s.memory_objects` fresh counter objects (over `s.conns` connections),
/// reads the RSS again, waits until the objects hibernate, and reads it a last time.
pub async fn memory_objects(target: &Target, s: &Settings) -> Result<Memory> {
    memory_objects_of(target, s, "/counter", s.memory_objects).await
}

/// [`memory_objects`] for the JavaScript counter, with a tenth as many objects: a JavaScript
/// instance holds about 10 MiB of linear memory, and all of them must fit awake at once.
pub async fn memory_objects_js(target: &Target, s: &Settings) -> Result<Memory> {
    memory_objects_of(target, s, js_counter(target), s.memory_objects / 10).await
}

async fn memory_objects_of(
    target: &Target,
    s: &Settings,
    counter: &str,
    count: usize,
) -> Result<Memory> {
    let (memory, ()) = Memory::measure(target, s, async || {
        let run = nonce();
        let paths = (0..count)
            .map(|i| format!("{counter}/mem-{run}-{i}/"))
            .collect();
        touch_all(target, s.conns, Method::POST, paths)
            .await
            .context("touching the objects")?;
        Ok((count, ()))
    })
    .await?;
    Ok(memory)
}

/// What the redeploy scenario measured.
#[derive(Clone, Debug)]
pub struct Redeploy {
    /// How long the deploy call (`PUT /_admin/namespaces/counter`) took.
    pub deploy_call: Duration,
    /// From the deploy call returning to the first answer from the new code; negative if the
    /// new code answered before the call returned.
    pub switch_ms: f64,
    /// Requests sent during the whole run.
    pub requests: u64,
    /// Requests that failed (error, timeout, non-200, or a body from neither version).
    pub failed: u64,
    /// Answers from the old code on a connection that had already seen the new one.
    pub old_after_new: u64,
}

/// Scenario 8 (dohost only): `s.mid_conns` connections of `GET /counter/redeploy-{i}/` load;
/// after `s.redeploy_before`, `new_code` (examples/ticket-counter, whose GET answers
/// `{"issued":n}`) is deployed over namespace `counter`; the load goes on for
/// `s.redeploy_after` after the call returns. Then `restore` (examples/counter) is deployed
/// back.
pub async fn redeploy(
    target: &Target,
    s: &Settings,
    new_code: Bytes,
    restore: Bytes,
) -> Result<Redeploy> {
    let token = target.token()?.to_owned();
    let t_zero = Instant::now();
    // Nanoseconds after t_zero of the first new-code answer (u64::MAX: none yet).
    let first_new = Arc::new(AtomicU64::new(u64::MAX));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for c in 0..s.mid_conns {
        let (first_new, stop, addr) = (first_new.clone(), stop.clone(), target.addr);
        tasks.push(tokio::spawn(async move {
            let mut conn = HttpConn::new(addr);
            let path = format!("/counter/redeploy-{c}/");
            let (mut requests, mut failed, mut old_after_new) = (0u64, 0u64, 0u64);
            let mut seen_new = false;
            // Bounded: the orchestrator stops us, and never later than this.
            let hard_end = Instant::now() + Duration::from_secs(120);
            while !stop.load(Ordering::Relaxed) && Instant::now() < hard_end {
                requests += 1;
                match conn.send(Method::GET, &path, &[], Bytes::new()).await {
                    Ok((status, body)) if status == 200 => {
                        let body = String::from_utf8_lossy(&body);
                        if body.contains("\"issued\"") {
                            if !seen_new {
                                seen_new = true;
                                let at = t_zero.elapsed().as_nanos() as u64;
                                first_new.fetch_min(at, Ordering::SeqCst);
                            }
                        } else if body.contains("\"count\"") {
                            if seen_new {
                                old_after_new += 1;
                            }
                        } else {
                            failed += 1;
                        }
                    }
                    _ => failed += 1,
                }
            }
            (requests, failed, old_after_new)
        }));
    }
    tokio::time::sleep(s.redeploy_before).await;
    let auth = format!("Bearer {token}");
    let call_start = Instant::now();
    let deployed = deploy_counter(target, &auth, new_code).await;
    let returned = Instant::now();
    let deploy_call = returned - call_start;
    if let Err(e) = deployed {
        stop.store(true, Ordering::Relaxed);
        return Err(e.context("deploying the new code"));
    }
    tokio::time::sleep(s.redeploy_after).await;
    stop.store(true, Ordering::Relaxed);
    let mut result = Redeploy {
        deploy_call,
        switch_ms: f64::NAN,
        requests: 0,
        failed: 0,
        old_after_new: 0,
    };
    for task in tasks {
        let (requests, failed, old_after_new) = task.await?;
        result.requests += requests;
        result.failed += failed;
        result.old_after_new += old_after_new;
    }
    let first = first_new.load(Ordering::SeqCst);
    if first != u64::MAX {
        let returned_at = returned.duration_since(t_zero).as_secs_f64();
        result.switch_ms = (Duration::from_nanos(first).as_secs_f64() - returned_at) * 1000.0;
    }
    deploy_counter(target, &auth, restore)
        .await
        .context("deploying counter back")?;
    Ok(result)
}

/// Deploys `code` as the `counter` namespace through the admin API (`auth`: the header value).
async fn deploy_counter(target: &Target, auth: &str, code: Bytes) -> Result<()> {
    let (status, body) = request_once(
        target.addr,
        Method::PUT,
        "/_admin/namespaces/counter",
        &[("authorization", auth)],
        code,
    )
    .await?;
    if status != 200 {
        bail!(
            "deploy answered {status}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    Ok(())
}
