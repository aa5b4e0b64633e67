//! Outbound HTTP (`wasi:http/outgoing-handler`): the allow list, checked by URL and by resolved
//! address; the time, size and concurrency limits; the output gate before a request leaves; and
//! hostile guests against the caps. Every origin is a server this test runs on 127.0.0.1.

mod support;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::get;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use support::{Host, client, json, rss};
use tokio::sync::{Notify, watch};

/// What the origin saw.
#[derive(Default)]
struct Seen {
    /// Requests that arrived at `/hang`.
    hanging: AtomicUsize,
    hang_arrived: Notify,
    /// `/held` requests waiting for `release`, and the most there ever were at once.
    held: AtomicUsize,
    held_max: AtomicUsize,
    /// Bytes `/forever` has handed to its connections.
    streamed: AtomicU64,
    /// A process `/hang` kills with SIGKILL the moment a request arrives, if not 0.
    kill_on_hang: AtomicU32,
}

/// A test origin on 127.0.0.1:
/// - `/hello`: `hello`;
/// - `/hang`: never answers (and kills `kill_on_hang` first);
/// - `/held`: answers `held` once `release` is sent `true`;
/// - `/big`: 17 MiB with a `content-length`;
/// - `/many-headers`: a head of 200 headers;
/// - `/forever`: a chunked body that never ends.
struct Origin {
    addr: SocketAddr,
    seen: Arc<Seen>,
    release: watch::Sender<bool>,
}

impl Origin {
    async fn start() -> Origin {
        let seen = Arc::new(Seen::default());
        let (release, released) = watch::channel(false);
        let app = Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route(
                "/hang",
                get(|State((seen, _)): State<(Arc<Seen>, watch::Receiver<bool>)>| async move {
                    let pid = seen.kill_on_hang.load(Ordering::SeqCst);
                    if pid != 0 {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                    }
                    seen.hanging.fetch_add(1, Ordering::SeqCst);
                    seen.hang_arrived.notify_waiters();
                    std::future::pending::<()>().await;
                }),
            )
            .route(
                "/held",
                get(|State((seen, mut released)): State<(Arc<Seen>, watch::Receiver<bool>)>| async move {
                    let now = seen.held.fetch_add(1, Ordering::SeqCst) + 1;
                    seen.held_max.fetch_max(now, Ordering::SeqCst);
                    let _ = released.wait_for(|r| *r).await;
                    seen.held.fetch_sub(1, Ordering::SeqCst);
                    "held"
                }),
            )
            .route("/big", get(|| async { vec![b'x'; 17 << 20] }))
            .route(
                "/many-headers",
                get(|| async {
                    let mut response = axum::response::Response::builder();
                    for i in 0..200 {
                        response = response.header(format!("x-header-{i}"), "value");
                    }
                    response.body(Body::empty()).unwrap()
                }),
            )
            .route(
                "/forever",
                get(|State((seen, _)): State<(Arc<Seen>, watch::Receiver<bool>)>| async move {
                    let chunk = bytes::Bytes::from(vec![b'x'; 64 << 10]);
                    let stream = futures::stream::repeat_with(move || {
                        seen.streamed.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        Ok::<_, std::convert::Infallible>(chunk.clone())
                    });
                    Body::from_stream(stream)
                }),
            )
            .with_state((seen.clone(), released));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Origin {
            addr,
            seen,
            release,
        }
    }

    /// `http://127.0.0.1:PORT`, as a rule lists it.
    fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }
}

/// Deploys the test app `app`: the `front` worker on `/fetch`, `/fetch-many` and `/to/`, the
/// `caller` class as `{app}-fetchers` bound as `CALLERS`, and `allow` as its `[outbound] allow`.
async fn deploy(host: &Host, app: &str, allow: &[String]) {
    deploy_for(host, app, "", allow).await;
}

/// [`deploy`], with the worker's routes for requests to `route_host` only (any if empty).
async fn deploy_for(host: &Host, app: &str, route_host: &str, allow: &[String]) {
    let class = format!("{app}-fetchers");
    let routes: Vec<String> = ["/fetch", "/fetch-many", "/to/"]
        .iter()
        .map(|path| format!("{route_host}{path}"))
        .collect();
    let spec = json!({
        "routes": routes,
        "objects": [{ "binding": "CALLERS", "namespace": class, "public": false }],
        "outbound": allow,
    });
    let (status, body) = host
        .deploy_app(app, spec, Some("front"), &[(&class, "caller")])
        .await;
    assert_eq!(status, 200, "{body}");
}

/// `GET /fetch?url=URL` through the worker.
async fn worker_fetch(host: &Host, url: &str) -> (u16, Value) {
    let query = [("url", url)];
    json(client().get(host.at("/fetch")).query(&query)).await
}

/// `POST /to/CALLERS/{object}/{path}?url=URL`: the object fetches.
async fn object_fetch(host: &Host, object: &str, path: &str, url: &str) -> (u16, Value) {
    let query = [("url", url)];
    let target = host.at(&format!("/to/CALLERS/{object}/{path}"));
    json(client().post(target).query(&query)).await
}

async fn object_fetches(host: &Host, object: &str) -> Value {
    let (status, n) = json(client().get(host.at(&format!("/to/CALLERS/{object}/fetches")))).await;
    assert_eq!(status, 200, "{n}");
    n
}

#[tokio::test]
async fn a_listed_destination_is_reached_from_a_worker_and_an_object() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    deploy(&host, "shop", &[origin.origin()]).await;

    let (status, body) = worker_fetch(&host, &origin.url("/hello")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["status"].clone(), body["body"].clone()),
        (json!(200), json!("hello"))
    );

    let (status, body) = object_fetch(&host, "alice", "fetch", &origin.url("/hello")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["fetches"].clone(), body["body"].clone()),
        (json!(1), json!("hello"))
    );

    // HTTPS goes through TLS (here against an origin that speaks plain HTTP, so it fails).
    let https = format!("https://{}", origin.addr);
    deploy(&host, "shop", &[origin.origin(), https.clone()]).await;
    let (status, body) = worker_fetch(&host, &format!("{https}/hello")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["fetch_error"], "TLS-protocol-error", "{body}");

    // The metrics count both responses, and the failure by its name.
    let scraped = support::metrics::scrape(&host.at("/_admin/metrics")).await;
    let sent = |outcome| {
        let labels = [("app", "shop"), ("outcome", outcome)];
        support::metrics::value(&scraped, "dohost_outbound_requests_total", &labels)
    };
    assert_eq!((sent("ok"), sent("Tls")), (2.0, 1.0));
}

#[tokio::test]
async fn unlisted_destinations_are_refused_and_say_why() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    deploy(&host, "shop", &[origin.origin()]).await;

    // Another port of the same address, another name, another scheme, loopback by IPv6: none is
    // listed, and none is tried (no DNS, no connection).
    for url in [
        other.url("/hello"),
        format!("http://[::1]:{}/hello", origin.addr.port()),
        format!("https://{}/hello", origin.addr),
        "http://example.com/".to_owned(),
    ] {
        let (status, body) = worker_fetch(&host, &url).await;
        assert_eq!(status, 502, "{url}: {body}");
        assert_eq!(body["fetch_error"], "HTTP-request-denied", "{url}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains("[outbound] allow"), "{message}");
    }
    assert_eq!(other.seen.hanging.load(Ordering::SeqCst), 0);

    // Not a URL the SDK can send.
    let (status, body) = worker_fetch(&host, "ftp://example.com/").await;
    assert_eq!(
        (status, body["fetch_error"].clone()),
        (502, json!("invalid-request")),
        "{body}"
    );
}

#[tokio::test]
async fn a_listed_name_that_resolves_to_loopback_is_refused() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    let by_name = format!("http://localhost:{}", origin.addr.port());
    deploy(&host, "shop", std::slice::from_ref(&by_name)).await;

    // `localhost` is listed, but what it resolves to, 127.0.0.1 (and ::1), is loopback, which
    // only a rule naming the address admits.
    let (status, body) = worker_fetch(&host, &format!("{by_name}/hello")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["fetch_error"], "destination-IP-prohibited", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("loopback"),
        "{body}"
    );

    // Listing the address as well admits it under its name.
    deploy(&host, "shop", &[by_name.clone(), origin.origin()]).await;
    let (status, body) = worker_fetch(&host, &format!("{by_name}/hello")).await;
    assert_eq!(
        (status, body["body"].clone()),
        (200, json!("hello")),
        "{body}"
    );
}

#[tokio::test]
async fn a_lone_class_cannot_fetch_at_all() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    host.deploy("lonely", "caller").await;
    let query = [("url", origin.url("/hello"))];
    let (status, body) = json(client().post(host.at("/lonely/x/fetch")).query(&query)).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["fetch_error"], "HTTP-request-denied", "{body}");
}

#[tokio::test]
async fn an_origin_that_never_answers_times_out_before_the_event_does() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&["--event-timeout", "3"]);
    deploy(&host, "shop", &[origin.origin()]).await;

    // The request ends half a second before the event's deadline, so the guest answers.
    let started = Instant::now();
    let (status, body) = worker_fetch(&host, &origin.url("/hang")).await;
    let took = started.elapsed();
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["fetch_error"], "connection-read-timeout", "{body}");
    assert!(
        (Duration::from_millis(2300)..Duration::from_millis(3000)).contains(&took),
        "answered after {took:?}"
    );
    assert_eq!(origin.seen.hanging.load(Ordering::SeqCst), 1);

    // An object's too, and the host serves on.
    let (status, body) = object_fetch(&host, "alice", "fetch", &origin.url("/hang")).await;
    assert_eq!(
        (status, body["fetch_error"].clone()),
        (502, json!("connection-read-timeout"))
    );
    let (status, body) = worker_fetch(&host, &origin.url("/hello")).await;
    assert_eq!(
        (status, body["body"].clone()),
        (200, json!("hello")),
        "{body}"
    );
}

#[tokio::test]
async fn a_response_over_the_size_limit_is_refused() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    deploy(&host, "shop", &[origin.origin()]).await;

    // Its content-length says so: refused at its head.
    let started = Instant::now();
    let (status, body) = worker_fetch(&host, &origin.url("/big")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["fetch_error"], "HTTP-response-body-size", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("17825792"),
        "{body}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // So is a head of too many headers.
    let (status, body) = worker_fetch(&host, &origin.url("/many-headers")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(
        body["fetch_error"], "HTTP-response-header-section-size",
        "{body}"
    );

    // A body that never ends is cut at the limit.
    let (status, body) = worker_fetch(&host, &origin.url("/forever")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["fetch_error"], "body", "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("HTTP response body size exceeds limit"),
        "{message}"
    );
    let streamed = origin.seen.streamed.load(Ordering::Relaxed);
    assert!(streamed < 64 << 20, "the origin streamed {streamed} bytes");
}

#[tokio::test]
async fn an_objects_request_leaves_only_once_its_writes_are_durable() {
    let origin = Origin::start().await;
    let (mut host, _dir) = Host::start(&[]);
    deploy(&host, "shop", &[origin.origin()]).await;

    // The object counts the fetch, then fetches `/hang`. The moment the request reaches the
    // origin, the origin kills the host: the count must have been durable before it left. (A
    // request that did not wait would usually lose this race only sometimes: hence the rounds.)
    for round in 0..6 {
        origin.seen.kill_on_hang.store(host.pid(), Ordering::SeqCst);
        let arrived = origin.seen.hang_arrived.notified();
        let url = origin.url("/hang");
        let fetching = tokio::spawn({
            let target = host.at(&format!("/to/CALLERS/object-{round}/fetch"));
            async move { client().post(target).query(&[("url", url)]).send().await }
        });
        tokio::time::timeout(Duration::from_secs(10), arrived)
            .await
            .expect("the request reaches the origin");
        let _ = fetching.await;
        host.kill_and_restart();
        let count = object_fetches(&host, &format!("object-{round}")).await;
        assert_eq!(count, json!(1), "round {round}");
    }
}

#[tokio::test]
async fn a_refused_request_commits_nothing_and_an_admitted_one_commits_what_came_before() {
    let origin = Origin::start().await;
    let other = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    deploy(&host, "shop", &[origin.origin()]).await;

    // The event fails after a refused request: its count is discarded with it.
    let query = [("url", other.url("/hello")), ("fail", "1".into())];
    let r = client()
        .post(host.at("/to/CALLERS/bob/fetch"))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
    assert_eq!(object_fetches(&host, "bob").await, json!(0));

    // After an admitted one, the count before it stays, as before a stub call.
    let query = [("url", origin.url("/hello")), ("fail", "1".into())];
    let r = client()
        .post(host.at("/to/CALLERS/bob/fetch"))
        .query(&query)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502, "{}", r.text().await.unwrap());
    assert_eq!(object_fetches(&host, "bob").await, json!(1));

    // Inside a transaction the request is refused, saying why.
    let (status, body) =
        object_fetch(&host, "bob", "fetch-in-transaction", &origin.url("/hello")).await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(body["fetch_error"], "internal-error", "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("transaction"),
        "{body}"
    );
}

/// `/fetch-many?url=URL&n=N` through the worker: how many got a response, and the errors.
async fn fetch_many(host: &Host, url: &str, n: usize) -> Value {
    let query = [("url", url.to_owned()), ("n", n.to_string())];
    let (status, body) = json(client().get(host.at("/fetch-many")).query(&query)).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Waits until the origin holds `n` requests and no more arrive for half a second.
async fn held_settles(origin: &Origin, n: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = usize::MAX;
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = origin.seen.held.load(Ordering::SeqCst);
        if (now >= n && now == last) || Instant::now() > deadline {
            return now;
        }
        last = now;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_instance_has_at_most_eight_requests_in_flight() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    deploy(&host, "shop", &[origin.origin()]).await;

    let many = tokio::spawn({
        let (host_url, url) = (host.url.clone(), origin.url("/held"));
        async move {
            let query = [("url", url), ("n", "40".to_owned())];
            json(client().get(format!("{host_url}/fetch-many")).query(&query)).await
        }
    });
    assert_eq!(held_settles(&origin, 8).await, 8);
    origin.release.send(true).unwrap();
    let (status, body) = many.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        json!({ "ok": 8, "errors": { "connection-limit-reached": 32 } })
    );
    assert_eq!(origin.seen.held_max.load(Ordering::SeqCst), 8);

    // The slots come back as the responses are read: the next burst gets its 8 again.
    let body = fetch_many(&host, &origin.url("/hello"), 8).await;
    assert_eq!(body, json!({ "ok": 8, "errors": {} }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_app_has_at_most_sixty_four_requests_in_flight() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    deploy(&host, "shop", &[origin.origin()]).await;

    // Twelve worker requests at once, each on an instance of its own, of 8 fetches each.
    let bursts: Vec<_> = (0..12)
        .map(|_| {
            let (target, url) = (host.at("/fetch-many"), origin.url("/held"));
            tokio::spawn(async move {
                let query = [("url", url), ("n", "8".to_owned())];
                json(client().get(target).query(&query)).await
            })
        })
        .collect();
    assert_eq!(held_settles(&origin, 64).await, 64);
    origin.release.send(true).unwrap();
    let (mut ok, mut limited) = (0, 0);
    for burst in bursts {
        let (status, body) = burst.await.unwrap();
        assert_eq!(status, 200, "{body}");
        ok += body["ok"].as_u64().unwrap();
        limited += body["errors"]["connection-limit-reached"]
            .as_u64()
            .unwrap_or(0);
    }
    assert_eq!((ok, limited), (64, 96 - 64));
    assert_eq!(origin.seen.held_max.load(Ordering::SeqCst), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hostile_guests_cannot_take_more_than_the_apps_and_the_hosts_share() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    // Six apps, each of 12 worker requests at once of 8 outbound requests each: 96 an app
    // against its cap of 64, 576 in all against the host's 256.
    let apps = 6;
    for i in 0..apps {
        deploy_for(
            &host,
            &format!("app{i}"),
            &format!("app{i}.test"),
            &[origin.origin()],
        )
        .await;
    }
    let rss_before = rss(host.pid());
    let started = Instant::now();
    let mut bursts = Vec::new();
    for i in 0..apps {
        for _ in 0..12 {
            // Each app's worker answers under its own host name.
            let (target, url) = (host.at("/fetch-many"), origin.url("/held"));
            let app_host = format!("app{i}.test");
            bursts.push(tokio::spawn(async move {
                let query = [("url", url), ("n", "8".to_owned())];
                json(client().get(target).header("host", app_host).query(&query)).await
            }));
        }
    }
    let held = held_settles(&origin, 256).await;
    let rss_held = rss(host.pid());
    // The host serves on meanwhile: a request through a flooding app's worker to its object.
    let probe = Instant::now();
    let target = host.at("/to/CALLERS/calm/fetches");
    let (status, body) = json(client().get(target).header("host", "app0.test")).await;
    let probe = probe.elapsed();
    assert_eq!((status, body), (200, json!(0)));
    origin.release.send(true).unwrap();
    let mut ok = 0;
    let mut limited = 0;
    for burst in bursts {
        let (status, body) = burst.await.unwrap();
        assert_eq!(status, 200, "{body}");
        ok += body["ok"].as_u64().unwrap();
        limited += body["errors"]["connection-limit-reached"]
            .as_u64()
            .unwrap_or(0);
    }
    let rss_after = rss(host.pid());
    println!(
        "{apps} apps × 12 requests × 8 fetches: {held} held at the origin at once (max {}), \
         {ok} answered, {limited} refused connection-limit-reached, in {:?}; a request to an \
         object meanwhile took {probe:?}; host RSS {} MiB before, {} MiB while held, {} MiB after",
        origin.seen.held_max.load(Ordering::SeqCst),
        started.elapsed(),
        rss_before >> 20,
        rss_held >> 20,
        rss_after >> 20,
    );
    assert_eq!(held, 256, "the host-wide cap");
    assert_eq!(origin.seen.held_max.load(Ordering::SeqCst), 256);
    assert_eq!((ok, limited), (256, 576 - 256));
    assert!(probe < Duration::from_secs(1), "{probe:?}");
    assert!(
        rss_held < rss_before + (256 << 20),
        "{} MiB",
        rss_held >> 20
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_that_stream_forever_are_cut_and_memory_stays_bounded() {
    let origin = Origin::start().await;
    let (host, _dir) = Host::start(&[]);
    deploy(&host, "shop", &[origin.origin()]).await;
    let rss_before = rss(host.pid());
    let started = Instant::now();
    // Eight objects at once, each reading an endless body.
    let readers: Vec<_> = (0..8)
        .map(|i| {
            let (host_url, url) = (host.url.clone(), origin.url("/forever"));
            tokio::spawn(async move {
                let target = format!("{host_url}/to/CALLERS/reader-{i}/fetch");
                json(client().post(target).query(&[("url", url)])).await
            })
        })
        .collect();
    let mut peak = rss_before;
    while !readers.iter().all(|r| r.is_finished()) {
        peak = peak.max(rss(host.pid()));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for reader in readers {
        let (status, body) = reader.await.unwrap();
        assert_eq!(status, 502, "{body}");
        assert_eq!(body["fetch_error"], "body", "{body}");
    }
    let took = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let streamed = origin.seen.streamed.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let streamed_later = origin.seen.streamed.load(Ordering::Relaxed);
    // The guests keep what they read in their own memories, which stay live (and bounded by
    // the memory limit); the rest of the growth is the host's.
    let guests = host.stats().await["instance_memory_bytes"]
        .as_u64()
        .unwrap();
    let host_growth = peak.saturating_sub(rss_before + guests);
    println!(
        "8 endless bodies cut in {took:?}; the origin streamed {} MiB in all (what the host read \
         and what the kernel buffered); host RSS {} MiB before, peak {} MiB, of which the guests' \
         memories {} MiB: the host's own growth {} MiB",
        streamed >> 20,
        rss_before >> 20,
        peak >> 20,
        guests >> 20,
        host_growth >> 20,
    );
    assert_eq!(streamed, streamed_later, "the connections are closed");
    assert!(streamed < 8 * (32 << 20), "{streamed}");
    assert!(host_growth < 64 << 20, "{} MiB", host_growth >> 20);
}
