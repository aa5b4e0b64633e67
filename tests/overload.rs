//! More than the host has room for: instance slots, memory mappings, memory. The host never
//! aborts; what it cannot take it answers 503 `overloaded` with `Retry-After`, and it keeps
//! serving everything else.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};
use support::*;

/// One flood at a time: each test measures what the host holds or how fast it answers, with a
/// negative control that must show the difference, and floods sharing two cores blur both (run
/// together, a control's unbounded host grew too little to tell it from the bounded one).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_of_fresh_object_names_is_served_or_refused_and_the_host_keeps_serving() {
    let _serial = SERIAL.lock().await;
    let (host, _dir) = Host::start(&["--max-live-objects", "16"]);
    host.deploy("counter", "counter").await;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut flood = Vec::new();
    for c in 0..64 {
        let (url, stop, ok, refused) =
            (host.url.clone(), stop.clone(), ok.clone(), refused.clone());
        flood.push(tokio::spawn(async move {
            let http = client();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let r = http
                    .post(format!("{url}/counter/fresh-{c}-{i}/"))
                    .send()
                    .await
                    .expect("the host answers every request");
                let counter = if served_or_overloaded(r).await {
                    &ok
                } else {
                    &refused
                };
                counter.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        }));
    }
    // A bystander keeps being answered, and promptly.
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let asked = Instant::now();
        let r = client()
            .get(host.at("/counter/bystander/"))
            .send()
            .await
            .expect("the bystander is answered");
        served_or_overloaded(r).await;
        worst = worst.max(asked.elapsed());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    let stats = host.stats().await;
    eprintln!(
        "fresh names: {} served, {} refused; bystander's slowest answer {worst:?}; {stats}",
        ok.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 200, "{stats}");
    assert!(
        worst < Duration::from_secs(2),
        "the bystander waited {worst:?}"
    );
    assert!(stats["live_instances"].as_u64().unwrap() <= 16, "{stats}");
    // Afterwards it serves normally.
    for i in 0..50 {
        let r = client()
            .post(host.at(&format!("/counter/after-{i}/")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_that_finds_every_instance_busy_waits_a_second_then_gets_503() {
    let _serial = SERIAL.lock().await;
    let (host, _dir) = Host::start(&["--max-live-objects", "2"]);
    host.deploy("busy", "hostile").await;
    // Two objects busy for seconds hold both slots (about 1 ms of CPU per million).
    let mut spinning = Vec::new();
    for name in ["a", "b"] {
        let url = host.at(&format!("/busy/{name}/spin?n=3000000000"));
        spinning.push(tokio::spawn(async move { client().get(url).send().await }));
    }
    let every = Duration::from_millis(20);
    poll(
        "both slots busy",
        Duration::from_secs(10),
        every,
        || async { (host.stats().await["live_instances"] == 2).then_some(()) },
    )
    .await;
    let asked = Instant::now();
    let r = client()
        .get(host.at("/busy/c/spin?n=1"))
        .send()
        .await
        .unwrap();
    let waited = asked.elapsed();
    assert!(!served_or_overloaded(r).await, "a third object got a slot");
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(3),
        "refused after {waited:?}: the wait is one second"
    );
    assert_eq!(host.stats().await["overloaded"], 1);
    for s in spinning {
        assert_eq!(s.await.unwrap().unwrap().status(), 200);
    }
    // Room again: served.
    let r = client()
        .get(host.at("/busy/c/spin?n=1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[test]
fn an_instance_cap_the_kernels_mappings_would_not_hold_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_dohost"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data"])
        .arg(dir.path())
        .args(["--max-live-objects", "100000000", "--admin-token", TOKEN])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started: {stderr}");
    assert!(
        stderr.contains("vm.max_map_count") && stderr.contains("--max-live-objects 100000000"),
        "{stderr}"
    );
}

/// Touches `mib` MiB in each of `objects` hostile objects in turn, stopping early once the
/// host's RSS grew more than `enough`; returns the host's peak RSS over its RSS before, and the
/// stats after.
async fn hoard(host: &Host, objects: usize, mib: usize, enough: u64) -> (u64, serde_json::Value) {
    let idle = rss(host.pid());
    let mut peak = idle;
    for i in 0..objects {
        let r = client()
            .get(host.at(&format!("/hoard/o{i}/hoard?mib={mib}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "object {i}: {}", r.text().await.unwrap());
        peak = peak.max(rss(host.pid()));
        if peak - idle > enough {
            break;
        }
    }
    let stats = host.stats().await;
    eprintln!(
        "{objects} objects keeping {mib} MiB: RSS {} MiB before, {} MiB at the peak; {stats}",
        idle >> 20,
        peak >> 20
    );
    (peak - idle, stats)
}

/// What the host holds beyond the instances' memories while they fill: the freed memories on
/// their way back to the kernel, the request and response buffers.
const MEMORY_MARGIN: u64 = 256 << 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn live_instances_memories_stay_within_the_budget() {
    let _serial = SERIAL.lock().await;
    let (host, _dir) = Host::start(&["--max-memory", "1024"]);
    host.deploy("hoard", "hostile").await;
    let (grew, stats) = hoard(&host, 40, 100, u64::MAX).await;
    assert!(
        grew <= (1 << 30) + MEMORY_MARGIN,
        "RSS grew {} MiB for a 1,024 MiB budget",
        grew >> 20
    );
    assert!(
        stats["live_instances"].as_u64().unwrap() < 40,
        "the oldest were evicted: {stats}"
    );
    // The last growth was allowed because idle instances could make room; their eviction
    // follows at once.
    let every = Duration::from_millis(20);
    poll(
        "memories under the budget",
        Duration::from_secs(5),
        every,
        || async {
            let used = host.stats().await["instance_memory_bytes"]
                .as_u64()
                .unwrap();
            (used <= 1 << 30).then_some(())
        },
    )
    .await;
}

/// The control: without the budget the same objects keep more than the budget allows (all 40
/// would keep 4 GB; it stops once past).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_the_budget_the_same_objects_grow_the_host_past_it() {
    let _serial = SERIAL.lock().await;
    let (host, _dir) = Host::start(&["--max-memory", "1000000"]);
    host.deploy("hoard", "hostile").await;
    let (grew, stats) = hoard(&host, 40, 100, (1 << 30) + MEMORY_MARGIN).await;
    assert!(
        grew > (1 << 30) + MEMORY_MARGIN,
        "RSS grew only {} MiB: the budget test could not fail",
        grew >> 20
    );
    let live = stats["live_instances"].as_u64().unwrap();
    assert!(live * 100 > 1024, "none was evicted: {stats}");
}

/// `uploads` connections each send the head of a 15 MiB POST to the counter and all but its last
/// MiB, then wait for `release` before sending the rest; answers the host's RSS growth while they
/// wait, and the statuses they finally get.
async fn held_back_uploads(host: &Host, uploads: usize) -> (u64, Vec<u16>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 15 << 20;
    let before = rss(host.pid());
    let release = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for i in 0..uploads {
        let (addr, release) = (host.addr(), release.clone());
        let released = release.notified_owned();
        tasks.push(tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
            let head = format!(
                "POST /counter/upload-{i}/ HTTP/1.1\r\nhost: x\r\ncontent-length: {SIZE}\r\n\r\n"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let body = vec![b'x'; SIZE];
            let (first, last) = body.split_at(SIZE - (1 << 20));
            // Held by TCP backpressure once the host stops reading: that is the point.
            let _ = tokio::time::timeout(Duration::from_secs(20), tcp.write_all(first)).await;
            released.await;
            if tcp.write_all(last).await.is_err() {
                return 0;
            }
            let mut answer = vec![0u8; 4096];
            let n = tcp.read(&mut answer).await.unwrap_or(0);
            let text = String::from_utf8_lossy(&answer[..n]).into_owned();
            text.split_whitespace()
                .nth(1)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0)
        }));
    }
    // Let every upload send what it can, then measure what the host holds meanwhile.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let grown = rss(host.pid()).saturating_sub(before);
    // Others are served meanwhile: a body-less request, and a small body.
    let c = client();
    let r = c.get(host.at("/counter/bystander/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .post(host.at("/counter/bystander/"))
        .body("small")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    release.notify_waiters();
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.push(task.await.unwrap());
    }
    (grown, statuses)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_held_open_cost_at_most_the_bodies_budget_and_then_complete() {
    let _serial = SERIAL.lock().await;
    // 40 uploads of 15 MiB against a 64 MiB budget: four at a time are read, the others wait
    // outside the host's memory; all complete once they are let go.
    let budget = 64u64 << 20;
    let (host, _dir) = Host::start(&["--max-request-bodies-total", &budget.to_string()]);
    host.deploy("counter", "counter").await;
    let (grown, statuses) = held_back_uploads(&host, 40).await;
    println!(
        "RSS grew by {} MiB while 40 uploads were held open",
        grown >> 20
    );
    assert!(
        grown < budget + (48 << 20),
        "RSS grew by {} MiB",
        grown >> 20
    );
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");

    // Negative control: with the budget lifted, the same uploads are all held in memory.
    let (host, _dir) = Host::start(&["--max-request-bodies-total", &(8u64 << 30).to_string()]);
    host.deploy("counter", "counter").await;
    let (grown, statuses) = held_back_uploads(&host, 40).await;
    println!("without the budget, RSS grew by {} MiB", grown >> 20);
    assert!(grown > 400 << 20, "RSS grew by only {} MiB", grown >> 20);
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");
}

/// What a flood of requests to one slow object got.
struct Flood {
    /// Answered 503 `overloaded` with `Retry-After: 1`.
    refused: usize,
    /// Answered otherwise, or not within the wait (queued).
    other: usize,
    /// Connections reset before an answer.
    reset: usize,
    /// How long after the flood began the last refusal came.
    last_refusal: Duration,
    /// The host's largest RSS growth while the flood was held.
    grew: u64,
}

/// Raises this process's limit on open files to its hard limit (the host, started after, inherits
/// it); answers how many connections the flood may open, at most `wanted`.
fn connections_allowed(wanted: usize) -> usize {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain system calls on a struct we own.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    let allowed = usize::try_from(limit.rlim_cur).unwrap_or(usize::MAX);
    let clients = wanted.min(allowed.saturating_sub(500));
    if clients < wanted {
        println!(
            "only {clients} connections: the hard limit on open files here is {allowed} \
             (`ulimit -Hn`)"
        );
    }
    clients
}

/// `clients` connections at once each POST a 64 KiB body to the object `slow`, whose every event
/// takes 200 ms, then wait up to `hold` for their answers while the host's RSS is sampled.
async fn flood_one_slow_object(host: &Host, clients: usize, hold: Duration) -> Flood {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const BODY: usize = 64 << 10;
    let before = rss(host.pid());
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let addr = host.addr();
        tasks.spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
            let head = format!(
                "POST /slow/slow/sleep?ms=200 HTTP/1.1\r\nhost: x\r\ncontent-length: {BODY}\r\n\r\n"
            );
            let mut request = head.into_bytes();
            request.resize(request.len() + BODY, b'x');
            // A refused request's body is not read: the host may close before it is all sent.
            let _ = tcp.write_all(&request).await;
            let mut answer = Vec::new();
            let mut buf = [0u8; 1024];
            while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
                match tcp.read(&mut buf).await {
                    Ok(0) => break,
                    Err(_) => return None,
                    Ok(n) => answer.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&answer).to_ascii_lowercase();
            let refused = head.starts_with("http/1.1 503") && head.contains("retry-after: 1");
            Some((refused, started.elapsed()))
        });
    }
    let mut flood = Flood {
        refused: 0,
        other: 0,
        reset: 0,
        last_refusal: Duration::ZERO,
        grew: 0,
    };
    let until = tokio::time::Instant::now() + hold;
    let mut sample = tokio::time::interval(Duration::from_millis(20));
    loop {
        tokio::select! {
            done = tasks.join_next() => match done {
                Some(Ok(Some((true, at)))) => {
                    flood.refused += 1;
                    flood.last_refusal = flood.last_refusal.max(at);
                }
                Some(Ok(Some((false, _)))) => flood.other += 1,
                Some(_) => flood.reset += 1,
                None => break,
            },
            _ = sample.tick() => flood.grew = flood.grew.max(rss(host.pid()).saturating_sub(before)),
            () = tokio::time::sleep_until(until) => break,
        }
    }
    flood.other += tasks.len();
    tasks.abort_all();
    flood
}

/// The flood: 10,000 requests at once to one object that serves five a second. Its queue
/// takes what fits its bound; the rest are refused at once, without their bodies being kept, so
/// what the host holds does not grow with the flood; and everything else is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_flood_to_one_slow_object_is_refused_at_once_and_memory_stays_bounded() {
    let _serial = SERIAL.lock().await;
    let clients = connections_allowed(10_000);
    let (host, _dir) = Host::start(&[]);
    host.deploy("slow", "test_object").await;
    let bounded = flood_one_slow_object(&host, clients, Duration::from_secs(20)).await;
    println!(
        "{clients} requests to one slow object: {} refused (the last after {:?}), {} queued or \
         served, {} reset; RSS grew by at most {} MiB",
        bounded.refused,
        bounded.last_refusal,
        bounded.other,
        bounded.reset,
        bounded.grew >> 20
    );
    // The queue holds at most 32 MiB of these requests: about 500 of them.
    assert!(bounded.other <= 600, "{} were queued", bounded.other);
    assert!(
        bounded.refused >= clients * 9 / 10,
        "{} refused",
        bounded.refused
    );
    assert!(bounded.last_refusal < Duration::from_secs(15));
    // What 10,000 connections cost (hyper's buffers), and not the bodies they send.
    assert!(
        bounded.grew < 768 << 20,
        "RSS grew by {} MiB",
        bounded.grew >> 20
    );
    // Others are served meanwhile, and the stats count the refusals.
    let r = client().get(host.at("/slow/other/identity")).send().await;
    assert_eq!(r.unwrap().status(), 200);
    let stats = host.stats().await;
    assert!(
        stats["overloaded"].as_u64().unwrap() >= bounded.refused as u64,
        "{stats}"
    );

    // Negative control: with the bound lifted, the same flood is held in memory.
    let (host, _dir) = Host::start(&[
        "--max-object-queue",
        "1000000",
        "--max-object-queue-bytes",
        "100000000000",
    ]);
    host.deploy("slow", "test_object").await;
    let unbounded = flood_one_slow_object(&host, clients, Duration::from_secs(10)).await;
    println!(
        "without the bound: {} refused, RSS grew by {} MiB",
        unbounded.refused,
        unbounded.grew >> 20
    );
    assert_eq!(unbounded.refused, 0);
    assert!(
        unbounded.grew > bounded.grew + (400 << 20),
        "RSS grew by only {} MiB: the test could not fail",
        unbounded.grew >> 20
    );
}
