//! Hostile guests (`tests/guests/hostile`), one attack per test: an infinite loop, a memory bomb,
//! deep recursion, a huge response body, a flood of storage keys past the quota, a log flood,
//! reaching for files, environment and network through WASI, a loop over an expensive host
//! import, and sleeping in a WASI call.
//!
//! Each test checks that the attacker gets its precise status and error code, that the write it
//! made earlier in the same event is gone, that the host keeps serving (the attacker itself
//! included), and that a well-behaved object's p99 latency measured while the attack repeats
//! stays within 2x its baseline. The tests take turns (see [`serial`]) so that one test's attack
//! is not another's noise. Two tests measure the same without an attack: a busy neighbour (a
//! namespace that fails nothing but keeps the guest busy, which must give way to others), and a
//! well-behaved second client at full speed: the cost of sharing the cores at all, to read the
//! attacks' ratios against.

mod support;

use serde_json::Value;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use support::{Host, TOKEN, client, json};

/// Requests of the well-behaved object per p99 measurement (each side): its p99 is the tenth
/// worst, not a single stray one.
const SAMPLES: usize = 1000;

/// The p99 a ratio is computed against is at least this. The tests drive a debug build of the
/// host on a shared 2-core machine: a trivial GET there has a p99 of about 1 ms, and one
/// descheduling of the test or the host by anything else on the box costs a few ms, so a bound
/// of 2x a 1 ms baseline would measure the box, not the host. The attacks also cost the debug
/// host several times what they cost a release build (instantiating and tearing down instances,
/// copying bodies and log lines), and that work competes for the same two cores. A release host
/// keeps the bystander between 0.11 and 0.2 ms against 0.1 to 0.15 ms baselines (RELIABILITY.md,
/// `cargo test --release`); that run's printed ratios are where the 2x is read. A host that let
/// an attack block its workers shows tens to hundreds of ms, above this bound in any build.
const NOISE_FLOOR_MS: f64 = 5.0;

/// Every test holds this while it runs: their attacks would otherwise overlap each other's
/// measurements. (A tokio mutex works across the tests' runtimes and is not poisoned by a test
/// that panicked.)
async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    SERIAL.lock().await
}

/// A host with the hostile guest as `h` and the counter example, the bystander, as `counter`.
async fn start(args: &[&str]) -> (Host, tempfile::TempDir) {
    let (host, dir) = Host::start(args);
    deploy_both(&host).await;
    (host, dir)
}

async fn deploy_both(host: &Host) {
    host.deploy("h", "hostile").await;
    host.deploy("counter", "counter").await;
    assert_eq!(background(host, "h").await, None, "nothing failed yet");
}

/// What an attack must get: a 500 with this code, and an error message containing `says`.
struct Expect {
    code: &'static str,
    says: &'static str,
}

/// Runs the attack at `path` on the object `object` once and checks its answer.
async fn attack(host: &Host, object: &str, path: &str, expect: &Expect) -> Value {
    let (status, body) = json(client().get(host.at(&format!("/h/{object}{path}")))).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (500, Some(expect.code)),
        "{path}: {body}"
    );
    let message = body["error"].as_str().unwrap_or_default();
    assert!(message.contains(expect.says), "{path}: {body}");
    body
}

/// The value of `key` in the object's storage, read through the object (so it also shows that
/// the object is served again after its attack).
async fn stored(host: &Host, object: &str, key: &str) -> Value {
    let (status, body) = json(client().get(host.at(&format!("/h/{object}/get?key={key}")))).await;
    assert_eq!(status, 200, "{body}");
    body["value"].clone()
}

/// Rounds of measurement: each is a window without the attack, then one with it.
const ROUNDS: usize = 10;

/// The latencies, in ms, of `n` sequential GETs to the bystander (after one to connect), from
/// a thread and runtime of their own: the bystander's client is not the attacker's, and on the
/// test's runtime the attacker's client (parsing its answers, opening its connections) would
/// delay the measuring task itself.
async fn bystander_latencies(host: &Host, n: usize, into: &mut Vec<f64>) {
    let url = host.at("/counter/bystander/");
    let measure = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("the bystander's runtime");
        runtime.block_on(async {
            let c = client();
            let mut ms = Vec::with_capacity(n);
            for i in 0..=n {
                let started = Instant::now();
                let response = c.get(&url).send().await.expect("bystander request");
                assert_eq!(response.status(), 200);
                response.bytes().await.expect("bystander body");
                if i > 0 {
                    ms.push(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            ms
        })
    });
    let ms = tokio::task::spawn_blocking(move || measure.join())
        .await
        .unwrap()
        .expect("the bystander's requests succeed");
    into.extend(ms);
}

fn p99(mut ms: Vec<f64>) -> f64 {
    ms.sort_by(f64::total_cmp);
    ms[ms.len() * 99 / 100 - 1]
}

/// Measures the bystander's p99 alone and while an attacker sends `GET path` again and again,
/// [`SAMPLES`] requests each, in [`ROUNDS`] alternating windows so that a burst of load from
/// elsewhere on the machine falls on both sides alike; prints both and checks the second is
/// within 2x the first (see [`NOISE_FLOOR_MS`]). `check` checks each attack's status and JSON
/// answer. Returns how many attacks ran.
///
/// The attacker's client ([`Connection`]) keeps its connection, as the bystander's does, and
/// does next to no work of its own: what is measured is what the guest's behaviour costs others
/// through the host. A client opening a connection per request loads the HTTP layer whatever
/// the object does; `concurrent_well_behaved_load` shows what a second client at full speed
/// costs on its own.
async fn p99_under_attack<C>(host: &Host, name: &str, path: &str, check: C) -> u32
where
    C: Fn(u16, &Value) + Send + Sync + 'static,
{
    // Warm up: the bystander's instance, the client's connections.
    let mut ignored = Vec::new();
    bystander_latencies(host, 20, &mut ignored).await;
    let (mut alone, mut attacked) = (Vec::new(), Vec::new());
    let mut attacks = 0;
    let check = Arc::new(check);
    for _ in 0..ROUNDS {
        bystander_latencies(host, SAMPLES / ROUNDS, &mut alone).await;
        let stop = Arc::new(AtomicBool::new(false));
        let (stopped, check) = (stop.clone(), check.clone());
        let (url, path) = (host.url.clone(), path.to_owned());
        let attacker = tokio::spawn(async move {
            let (mut c, mut attacks) = (Connection::open(&url).await, 0);
            while !stopped.load(Ordering::Relaxed) {
                let (status, body) = c.get(&path).await;
                check(status, &body);
                attacks += 1;
            }
            attacks
        });
        bystander_latencies(host, SAMPLES / ROUNDS, &mut attacked).await;
        stop.store(true, Ordering::Relaxed);
        // The attack in flight ends before the next window without it.
        attacks += attacker.await.expect("the attacks answered as expected");
    }
    let (baseline, during) = (p99(alone), p99(attacked));
    println!(
        "hostile {name}: bystander p99 {during:.2} ms (baseline {baseline:.2} ms, {:.2}x), {attacks} attack(s)",
        during / baseline
    );
    let bound = 2.0 * baseline.max(NOISE_FLOOR_MS);
    assert!(
        during <= bound,
        "{name}: the bystander's p99 went from {baseline:.2} ms to {during:.2} ms (bound {bound:.2} ms)"
    );
    attacks
}

/// The attacker's client: one keep-alive HTTP/1.1 connection that sends GETs and reads whole
/// answers (which the host always sends with a `content-length`). It shares the test machine's
/// two cores with the host and the bystander's client, so its own work per request must be
/// small next to the host's, as a remote attacker's costs the host nothing: a general HTTP
/// client's (pooling, header maps, a task per request) added a measurable share to what the
/// bystander waited for.
struct Connection {
    stream: tokio::net::TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(url: &str) -> Connection {
        let addr = url.strip_prefix("http://").expect("an http:// URL");
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .expect("connect to the host");
        stream.set_nodelay(true).expect("TCP_NODELAY");
        Connection {
            stream,
            buf: Vec::with_capacity(64 << 10),
        }
    }

    /// `GET path`: the status and the body as JSON.
    async fn get(&mut self, path: &str) -> (u16, Value) {
        use tokio::io::AsyncWriteExt;
        let request = format!("GET {path} HTTP/1.1\r\nhost: dohost\r\n\r\n");
        self.stream
            .write_all(request.as_bytes())
            .await
            .expect("send the request");
        self.buf.clear();
        let body_at = loop {
            if let Some(end) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            self.read().await;
        };
        let head = String::from_utf8_lossy(&self.buf[..body_at]).into_owned();
        let status = head
            .get(9..12)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status: {head}"));
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .unwrap_or_else(|| panic!("no content-length: {head}"));
        while self.buf.len() < body_at + length {
            self.read().await;
        }
        let body = &self.buf[body_at..body_at + length];
        let value = serde_json::from_slice(body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}), status {status}: {}",
                String::from_utf8_lossy(body)
            )
        });
        (status, value)
    }

    async fn read(&mut self) {
        use tokio::io::AsyncReadExt;
        let n = self.stream.read_buf(&mut self.buf).await.expect("read");
        assert!(n > 0, "the host closed the connection mid-answer");
    }
}

/// How many more milliseconds the admin API says `namespace` runs in the background, and why
/// (`None`: it runs in the foreground).
async fn background(host: &Host, namespace: &str) -> Option<(u64, String)> {
    let url = host.at(&format!("/_admin/namespaces/{namespace}"));
    let (status, info) = json(client().get(url).bearer_auth(TOKEN)).await;
    assert_eq!(status, 200, "{info}");
    match (&info["background_for_ms"], &info["background_cause"]) {
        (Value::Null, Value::Null) => None,
        (Value::Number(ms), Value::String(cause)) => Some((
            ms.as_u64().unwrap_or_else(|| panic!("{info}")),
            cause.clone(),
        )),
        _ => panic!("{info}"),
    }
}

/// The whole check of one attack that fails its event: the precise answer, the lost write, the
/// attacker's namespace sent to the background (and the bystander's not), a served attacker and
/// bystander, and the bystander's p99 under repeated attack.
async fn check_failing_attack(host: &Host, name: &'static str, path: &'static str, expect: Expect) {
    attack(host, "attacker", path, &expect).await;
    assert_eq!(stored(host, "attacker", "inflight").await, Value::Null);
    let class = background(host, "h").await;
    assert!(
        matches!(&class, Some((ms, cause)) if *ms <= 10_000 && cause == "limit"),
        "{name}: {class:?}"
    );
    assert_eq!(background(host, "counter").await, None);
    let code = expect.code;
    let attacks = p99_under_attack(
        host,
        name,
        &format!("/h/repeat{path}"),
        move |status, body| {
            assert_eq!((status, body["code"].as_str()), (500, Some(code)), "{body}");
        },
    )
    .await;
    assert!(attacks >= 1);
    assert_eq!(stored(host, "repeat", "inflight").await, Value::Null);
    assert_eq!(stored(host, "attacker", "inflight").await, Value::Null);
}

/// [`check_failing_attack`] for an attack only the wall-clock limit (`--event-timeout 1`) can
/// stop: its first answer also comes after that second, and well before the default's 30.
async fn check_time_limited_attack(host: &Host, name: &'static str, path: &'static str) {
    let started = Instant::now();
    let expect = Expect {
        code: "time_limit_exceeded",
        says: "time limit (1s",
    };
    attack(host, "attacker", path, &expect).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(20),
        "{name}: {took:?}"
    );
    check_failing_attack(host, name, path, expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_infinite_loop_gets_cpu_limit_exceeded() {
    let _turn = serial().await;
    let (host, _dir) = start(&["--cpu-limit", "200"]).await;
    let expect = Expect {
        code: "cpu_limit_exceeded",
        says: "CPU limit (200 ms)",
    };
    check_failing_attack(&host, "infinite loop", "/loop", expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_memory_bomb_gets_memory_limit_exceeded() {
    let _turn = serial().await;
    let (host, _dir) = start(&["--memory-limit", "32"]).await;
    let expect = Expect {
        code: "memory_limit_exceeded",
        says: "memory limit (32 MiB)",
    };
    check_failing_attack(&host, "memory bomb", "/oom", expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_recursion_gets_stack_overflow() {
    let _turn = serial().await;
    let (host, _dir) = start(&[]).await;
    let expect = Expect {
        code: "stack_overflow",
        says: "overflowed its stack",
    };
    check_failing_attack(&host, "deep recursion", "/recurse", expect).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_huge_response_body_gets_response_too_large() {
    let _turn = serial().await;
    // The default limit, 16 MiB, against a 64 MiB body.
    let (host, _dir) = start(&[]).await;
    let expect = Expect {
        code: "response_too_large",
        says: "over the limit (16777216 bytes): 67108864 bytes",
    };
    check_failing_attack(&host, "huge response", "/huge?mib=64", expect).await;

    // A body under the limit is delivered whole (and that event's write stays).
    let r = client()
        .get(host.at("/h/modest/huge?mib=15"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 15 << 20);
    assert_eq!(stored(&host, "modest", "inflight").await, "lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_keys_past_the_quota_fails_and_stores_none() {
    let _turn = serial().await;
    let (host, _dir) = start(&["--max-object-storage", "1000000"]).await;
    let expect = Expect {
        code: "object_error",
        says: "storage limit exceeded",
    };
    let body = attack(&host, "attacker", "/keys", &expect).await;
    assert!(body["error"].as_str().unwrap().contains("quota"), "{body}");
    assert_eq!(
        stored(&host, "attacker", "flood:00000000").await,
        Value::Null
    );
    check_failing_attack(&host, "storage flood", "/keys", expect).await;
    assert_eq!(stored(&host, "repeat", "flood:00000000").await, Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loop_over_an_expensive_host_import_gets_time_limit_exceeded() {
    let _turn = serial().await;
    let (host, _dir) = start(&["--event-timeout", "1"]).await;
    for object in ["attacker", "repeat"] {
        let r = client()
            .post(host.at(&format!("/h/{object}/fill")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 204);
    }
    // Listing 1 MiB per call burns almost no fuel: only the wall-clock limit can stop this.
    check_time_limited_attack(&host, "host import loop", "/host-loop").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sleeping_in_a_wasi_call_gets_time_limit_exceeded() {
    let _turn = serial().await;
    let (host, _dir) = start(&["--event-timeout", "1"]).await;
    // No guest code runs while it waits: only the host's own deadline on the call can end it.
    check_time_limited_attack(&host, "wasi sleep", "/sleep").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_log_flood_is_rate_limited_and_cut_off_by_the_time_limit() {
    let _turn = serial().await;
    let (host, _dir, log) = support::start_capturing_stderr(&["--event-timeout", "1"], "warn");
    deploy_both(&host).await;
    let expect = Expect {
        code: "time_limit_exceeded",
        says: "time limit",
    };
    let started = Instant::now();
    attack(&host, "attacker", "/log-flood", &expect).await;
    assert_eq!(stored(&host, "attacker", "inflight").await, Value::Null);
    let first = started.elapsed().as_secs_f64();
    let flood_lines = |log: &support::StderrLines| {
        log.lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("flood line"))
            .cloned()
            .collect::<Vec<_>>()
    };
    // The instance's log flushes its count of dropped lines when it is dropped, which is before
    // the answer: everything of the first attack is in the log by now, or about to be.
    let lines = support::poll(
        "the dropped-lines warning",
        Duration::from_secs(10),
        Duration::from_millis(20),
        || {
            let dropped = log
                .lock()
                .unwrap()
                .iter()
                .any(|l| l.contains("log lines dropped"));
            let lines = flood_lines(&log);
            async move { dropped.then_some(lines) }
        },
    )
    .await;
    // 100 at once, then 10 a second while the event ran; each line cut at 16 KiB.
    let allowed = 100 + (10.0 * first).ceil() as usize + 1;
    assert!(
        (100..=allowed).contains(&lines.len()),
        "{} lines written in {first:.2} s (allowed {allowed})",
        lines.len()
    );
    for line in &lines {
        assert!(
            line.len() < (16 << 10) + 512,
            "a line of {} bytes",
            line.len()
        );
        assert!(line.contains("[truncated, 20"), "not marked as cut");
    }
    // The time limit sent the namespace to the background, and the host said so.
    assert!(background(&host, "h").await.is_some());
    let demoted = log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("runs in the background for 10s") && l.contains("time limit"));
    assert!(demoted, "the demotion is logged, with its cause");
    let out = host.cli(&["namespaces", "--token", TOKEN]);
    let listing = String::from_utf8_lossy(&out.stdout);
    let shown = |namespace: &str, class: &str| {
        listing
            .lines()
            .any(|l| l.starts_with(&format!("{namespace} ")) && l.contains(class))
    };
    assert!(
        shown("h", "background (") && shown("counter", "foreground"),
        "{listing}"
    );

    let code = expect.code;
    let attacks = p99_under_attack(
        &host,
        "log flood",
        "/h/repeat/log-flood",
        move |status, body| {
            assert_eq!((status, body["code"].as_str()), (500, Some(code)), "{body}");
        },
    )
    .await;
    assert_eq!(stored(&host, "repeat", "inflight").await, Value::Null);
    // Each attack's instance got its own burst; nothing beyond the rate got through.
    let total = flood_lines(&log).len();
    let elapsed = started.elapsed().as_secs_f64();
    let allowed = (1 + attacks as usize) * 100 + (10.0 * elapsed).ceil() as usize + 1;
    assert!(total <= allowed, "{total} lines, allowed {allowed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wasi_grants_no_files_environment_or_network() {
    let _turn = serial().await;
    let (host, _dir) = start(&[]).await;
    // The host's own port: a connection there would be a way out.
    let port = host.url.rsplit(':').next().unwrap().to_owned();
    let url = host.at(&format!("/h/prober/wasi?port={port}"));
    let check = |report: &Value| {
        let attempts = report.as_object().expect("a JSON object");
        assert_eq!(attempts.len(), 13, "{report}");
        for (what, got) in attempts {
            assert_eq!(got["got"], false, "{what} got something: {}", got["detail"]);
        }
    };
    let (status, report) = json(client().get(&url)).await;
    assert_eq!(status, 200, "{report}");
    check(&report);
    println!("hostile wasi: {report}");
    // Refused calls are not limits: the prober stays in the foreground.
    assert_eq!(background(&host, "h").await, None);
    let path = format!("/h/prober/wasi?port={port}");
    let attacks = p99_under_attack(&host, "wasi", &path, move |status, report| {
        assert_eq!(status, 200, "{report}");
        check(report);
    })
    .await;
    assert!(attacks >= 1);
    // Its class is not checked here: at full speed a release host serves the probe fast enough
    // to pass its share of the CPU (about 20 µs of guest code a request), a debug host may not.
    // `a_busy_namespace_gives_way_to_others` checks the share.
}

/// Not a failure at all: requests that each keep the guest busy for about a millisecond, back
/// to back. Alone on the host the namespace keeps the foreground; beside the bystander it takes
/// more than its share of the CPU and goes to the background, and the bystander's p99 stays
/// within 2x. (In the suite's debug build the p99 bound is the 5 ms floor's, which the busy
/// neighbour stays under even in the foreground: there the class is what this checks.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_namespace_gives_way_to_others() {
    let _turn = serial().await;
    let (host, _dir) = start(&[]).await;
    let path = "/h/busy/spin?n=1000000";
    let spun = |status: u16, body: &Value| {
        assert_eq!(
            (status, &body["counted"]),
            (200, &Value::from(1_000_000)),
            "{body}"
        );
    };
    // Alone, for several of the windows in which shares are counted.
    let (mut c, started) = (Connection::open(&host.url).await, Instant::now());
    while started.elapsed() < dohost::cpu_share::WINDOW * 5 {
        let (status, body) = c.get(path).await;
        spun(status, &body);
    }
    assert_eq!(
        background(&host, "h").await,
        None,
        "alone, it is the host's"
    );

    let requests = p99_under_attack(&host, "busy neighbour", path, spun).await;
    assert!(requests >= 1);
    // It is in the background for a second after the last window in which it took more than
    // its share, and the bystander never was.
    let class = background(&host, "h").await;
    assert!(
        matches!(&class, Some((ms, cause)) if *ms <= 1_000 && cause == "share"),
        "{class:?}"
    );
    assert_eq!(background(&host, "counter").await, None);

    // One long event (seconds of guest code) is counted as it runs: its namespace goes to the
    // background while it runs, so that the next events run there. (Counted when it ended, the
    // second's demotion would have passed before the next one started.)
    tokio::time::sleep(dohost::cpu_share::SHARE_DEMOTION + dohost::cpu_share::WINDOW).await;
    assert_eq!(background(&host, "h").await, None);
    let mut c = Connection::open(&host.url).await;
    let long = tokio::spawn(async move { c.get("/h/long/spin?n=3000000000").await });
    let bystander = (client(), host.at("/counter/bystander/"));
    let class = support::poll(
        "the long event's namespace in the background",
        Duration::from_secs(10),
        Duration::from_millis(10),
        || async {
            let read = bystander.0.get(&bystander.1).send().await.unwrap();
            assert_eq!(read.status(), 200);
            background(&host, "h").await
        },
    )
    .await;
    assert_eq!(class.1, "share");
    assert!(!long.is_finished(), "demoted while its long event ran");
    let (status, body) = long.await.unwrap();
    assert_eq!(
        (status, &body["counted"]),
        (200, &Value::from(3_000_000_000u64))
    );
}

/// Not an attack: a second client sending well-behaved requests (counter reads, which like the
/// WASI probe write nothing) at full speed. Its ratio is what sharing the machine's cores with any
/// busy client costs the bystander, the figure to read the attacks' ratios against
/// (RELIABILITY.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_well_behaved_load() {
    let _turn = serial().await;
    let (host, _dir) = start(&[]).await;
    let requests = p99_under_attack(
        &host,
        "well-behaved load",
        "/counter/busy/",
        |status, body| {
            assert_eq!((status, &body["count"]), (200, &Value::from(0)), "{body}");
        },
    )
    .await;
    assert!(requests >= 1);
}
