//! Runs every dohost-side scenario in miniature (about a second each, tens of sockets) against a
//! real `dohost serve`, and checks that each produces sane numbers. Needs neither workerd nor
//! npm.
//!
//! The host binary is `$DOHOST_BIN`, else `target/debug/dohost` (`cargo build -p dohost`); the
//! guests are the release components in `target/wasm32-wasip2/release/`.

use dohost_bench::peers::{self, Dohost};
use dohost_bench::{Settings, Target, calls, load, ws};
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn dohost_bin() -> PathBuf {
    let bin = std::env::var_os("DOHOST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| peers::target_dir().join("debug/dohost"));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p dohost`, or set DOHOST_BIN to a dohost binary",
        bin.display()
    );
    bin
}

fn check_guests() {
    for guest in dohost_bench::GUESTS {
        let path = peers::guest_wasm(guest);
        assert!(
            path.exists(),
            "{} is missing: build the guests with `cargo build --release --target wasm32-wasip2 \
             -p counter -p chat-room -p hello -p ticket-counter -p bench-front -p bench-relay`",
            path.display()
        );
    }
}

fn check_load(what: &str, r: &load::LoadResult) {
    println!(
        "{what}: {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, {} failed",
        r.rps(),
        r.p50_ms(),
        r.p99_ms(),
        r.failed
    );
    assert!(r.ok > 0, "{what}: no request succeeded");
    assert_eq!(r.failed, 0, "{what}: requests failed");
    assert!(r.rps() > 0.0 && r.p50_ms() > 0.0, "{what}: {r:?}");
    assert!(r.p99_ms() >= r.p50_ms(), "{what}: p99 under p50");
}

async fn settle(t: &Target) {
    t.settle(Duration::from_secs(5))
        .await
        .expect("watching the host settle");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dohost_scenario_produces_sane_numbers() {
    let started = Instant::now();
    let bin = dohost_bin();
    check_guests();
    let dir = tempfile::tempdir().expect("temp dir");
    // A short idle timeout, so that the memory scenarios see the objects hibernate quickly.
    let host = Dohost::start(&bin, &dir.path().join("data"), 1.0).expect("starting dohost");
    host.deploy_all().await.expect("deploy");
    let t = host.target();
    let s = Settings::smoke();

    for conns in [1, s.mid_conns, s.conns] {
        let r = load::increment_one(&t, conns, &s).await.expect("increment");
        check_load(&format!("increment, {conns} conns"), &r);
    }
    check_load(
        "JavaScript increment",
        &load::increment_js(&t, s.conns, &s)
            .await
            .expect("JavaScript increment"),
    );
    check_load(
        "through the worker",
        &load::increment_through_worker(&t, s.conns, &s)
            .await
            .expect("through the worker"),
    );
    check_load(
        "worker → object → object",
        &load::increment_through_relay(&t, s.conns, &s)
            .await
            .expect("through the relay"),
    );
    let (hops, calls) = calls::around(&t, load::hops(&t, &s)).await.expect("hops");
    println!(
        "hops: direct {:.3} ms, worker {:.3} ms, relay {:.3} ms; {}",
        hops.direct_ms(),
        hops.worker_ms(),
        hops.relay_ms(),
        calls.describe()
    );
    assert_eq!(hops.relay.len(), s.cold_objects * 10);
    assert!(hops.direct_ms() > 0.0 && hops.worker_ms() > 0.0 && hops.relay_ms() > 0.0);
    // Each request through the relay is one call between objects (one more wakes the path).
    assert!(calls.calls > hops.relay.len() as u64, "{calls:?}");
    assert!(calls.median_overhead_us() > 0.0, "{calls:?}");
    check_load(
        "read",
        &load::read_one(&t, s.conns, &s).await.expect("read"),
    );
    check_load(
        "spread",
        &load::increment_spread(&t, s.conns, &s)
            .await
            .expect("spread"),
    );
    for shared in [false, true] {
        let fresh = load::increment_fresh(&t, s.conns, &s, shared)
            .await
            .expect("past the live cap");
        check_load("past the live cap", &fresh.load);
        assert!(
            fresh.rss_kib > 0 && fresh.maps > 0,
            "RSS and mappings are read"
        );
    }
    check_load("hello", &load::hello(&t, s.conns, &s).await.expect("hello"));
    settle(&t).await;

    let cold = load::cold_start(&t, &s).await.expect("cold start");
    println!(
        "cold start: {:.2} ms, warm {:.2} ms, trivial {:.2} ms",
        cold.cold_ms(),
        cold.warm_ms(),
        cold.trivial_ms()
    );
    assert_eq!(cold.cold.len(), s.cold_objects);
    assert_eq!(cold.warm.len(), s.cold_objects);
    assert_eq!(cold.trivial.len(), s.cold_objects);
    assert!(cold.cold_ms() > 0.0 && cold.warm_ms() > 0.0 && cold.trivial_ms() > 0.0);
    let cold_js = load::cold_start_js(&t, &s)
        .await
        .expect("JavaScript cold start");
    assert_eq!(cold_js.cold.len(), s.cold_objects);
    assert!(cold_js.cold_ms() > 0.0 && cold_js.warm_ms() > 0.0);

    let fanout = ws::fanout(&t, &s).await.expect("fan-out");
    println!("fan-out: {:?}", fanout.rounds);
    assert_eq!(fanout.rounds.len(), s.fanout_rounds);
    assert!(fanout.median_ms() > 0.0);
    settle(&t).await;

    let tput = ws::throughput(&t, &s).await.expect("throughput");
    println!(
        "throughput: {:.0} msg/s, {tput:?}",
        tput.delivered_per_sec()
    );
    assert_eq!(tput.errors, 0);
    assert!(tput.sent > 0 && tput.delivered >= tput.sent, "{tput:?}");
    settle(&t).await;

    let sockets = ws::memory_sockets(&t, &s).await.expect("memory per socket");
    println!(
        "memory per socket: {:.0} B, {sockets:?}",
        sockets.per_item_bytes()
    );
    assert_eq!(sockets.count, s.memory_sockets);
    assert!(sockets.idle.idle, "the rooms never hibernated: {sockets:?}");
    assert!(sockets.awake_kib > sockets.before_kib, "{sockets:?}");
    settle(&t).await;

    let objects = load::memory_objects(&t, &s)
        .await
        .expect("memory per object");
    println!(
        "memory per object: {:.0} B, {objects:?}",
        objects.per_item_bytes()
    );
    assert_eq!(objects.count, s.memory_objects);
    assert!(
        objects.idle.idle,
        "the objects never hibernated: {objects:?}"
    );

    let ticket = std::fs::read(peers::guest_wasm("ticket-counter")).unwrap();
    let counter = std::fs::read(peers::guest_wasm("counter")).unwrap();
    let redeploy = load::redeploy(&t, &s, ticket.into(), counter.into())
        .await
        .expect("redeploy");
    println!("redeploy: {redeploy:?}");
    assert!(redeploy.requests > 0);
    assert_eq!(redeploy.failed, 0, "requests failed across the redeploy");
    assert_eq!(
        redeploy.old_after_new, 0,
        "old code answered after new code"
    );
    assert!(
        redeploy.switch_ms.is_finite(),
        "the new code never answered"
    );
    // The counter is back.
    let (status, body) = load::request_once(
        t.addr,
        hyper::Method::POST,
        "/counter/after-redeploy/",
        &[],
        bytes::Bytes::new(),
    )
    .await
    .unwrap();
    assert_eq!((status.as_u16(), &body[..]), (200, &b"{\"count\":1}"[..]));

    println!("smoke test took {:.1} s", started.elapsed().as_secs_f64());
}
