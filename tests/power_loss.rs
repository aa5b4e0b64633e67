//! Crash safety under power loss. `kill -9` (tests/chaos.rs) leaves the operating system's page
//! cache intact, so it cannot tell a host that syncs before acknowledging from one that does
//! not. Here the host runs in this process on a simulated disk
//! ([`dohost::storage::SimulatedDisk`]) that keeps everything written since the last sync in a
//! volatile layer. Clients claim tickets, increment counters, chat over WebSockets and set alarms
//! (the chaos test's workload, smaller); at a random moment the power is cut: the volatile layer
//! is thrown away and the host's runtime dropped with every task, without a graceful shutdown.
//! The host then starts again on what was synced, and the chaos test's checks run
//! (`support/chaos_model.rs`): every acknowledged operation is there, none happened twice, and
//! every acknowledged alarm fires. An answer that arrives after the cut acknowledges nothing: a
//! host without power could not have sent it.
//!
//! `POWER_CUTS=n` sets the number of cuts (default 1,000), `POWER_SEED=n` repeats a run's
//! random choices. The negative control runs the same check on a disk whose sync makes durable
//! only what the previous sync promised, as a host that acknowledges before syncing would: it
//! must see acknowledged operations lost.

mod support;

use std::ops::Range;
use std::time::{Duration, Instant};

use dohost::storage::{Db, SimulatedDisk, Sync};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use support::chaos_load::{Load, alarm_client, chat_user, join_all_within, sequence_client};
use support::chaos_model::{Model, Sequences, Totals};
use support::in_process::{InProcessHost, test_config};
use support::{TOKEN, client, now_ms, wasm};

/// The namespaces and the guests deployed as them.
const NAMESPACES: [(&str, &str); 4] = [
    ("tickets", "ticket_counter"),
    ("counter", "counter"),
    ("chat", "chat_room"),
    ("alarms", "test_object"),
];

/// The chaos test's namespaces with fewer objects: every object is read after every cut.
const TICKETS: &Sequences = &Sequences {
    namespace: "tickets",
    objects: 2,
    post_field: "ticket",
    get_field: "issued",
};
const COUNTERS: &Sequences = &Sequences {
    namespace: "counter",
    objects: 8,
    post_field: "count",
    get_field: "count",
};
const TICKET_CLIENTS: usize = 3;
const COUNTER_CLIENTS: usize = 3;
const ROOMS: usize = 2;
const USERS_PER_ROOM: usize = 2;
/// Alarms are set in one cycle of this many: waiting for them to fire is the slowest check.
const ALARM_EVERY: usize = 10;
const ALARMS_PER_CYCLE: usize = 20;
const ALARM_DELAY_MS: Range<u64> = 10..200;
/// How long the clients run before the cut.
const LOAD_MS: Range<u64> = 5..50;
/// Cuts of the negative control: each loses what the last sync promised, so a few suffice.
const CONTROL_CUTS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_power_cuts_at_random_moments() {
    let cuts = env_number("POWER_CUTS").unwrap_or(1_000);
    let seed = env_number("POWER_SEED").unwrap_or_else(rand::random);
    println!("power loss: seed {seed}, {cuts} cuts (POWER_SEED={seed} repeats the random choices)");
    let started = Instant::now();
    let t = run(cuts, Sync::Honest, seed).await;
    let summary = summary("power loss", cuts, &t, seed, started);
    println!("{summary}");
    let path = support::target_dir().join("power-loss-summary.txt");
    std::fs::write(&path, format!("{summary}\n"))
        .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    assert_eq!(t.lost, 0, "acknowledged operations were lost; see above");
    assert_eq!(t.duplicated, 0, "operations happened twice; see above");
    assert_eq!(t.out_of_order, 0, "numbers went backwards; see above");
    assert_eq!(t.late, 0, "alarms did not fire in time; see above");
    assert!(
        t.errors.is_empty(),
        "the host answered with errors; see above"
    );
    assert!(
        t.tickets > 0 && t.increments > 0 && t.chat > 0 && t.alarms > 0,
        "some kind of operation was never acknowledged: {summary}"
    );
}

/// The negative control: the same workload and checks on a disk that acknowledges a sync before
/// making it durable. The checks must find acknowledged operations lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_check_catches_a_host_that_acknowledges_before_syncing() {
    let seed = env_number("POWER_SEED").unwrap_or_else(rand::random);
    let started = Instant::now();
    let t = run(CONTROL_CUTS, Sync::Lagging, seed).await;
    let summary = summary("power loss, lagging sync", CONTROL_CUTS, &t, seed, started);
    println!("{summary}");
    assert!(
        t.lost > 0,
        "no acknowledged operation was lost on a disk that acknowledges before syncing, so the \
         check cannot catch that: {summary}"
    );
}

/// Runs `cuts` cycles of load, power cut and restart on a fresh disk whose syncs are `sync`
/// (deploys are synced honestly); the totals of the checks.
async fn run(cuts: usize, sync: Sync, seed: u64) -> Totals {
    let mut rng = StdRng::seed_from_u64(seed);
    let data = tempfile::tempdir().expect("temp dir");
    let config = test_config(data.path());
    let disk = SimulatedDisk::new();
    let start = |disk: &SimulatedDisk| {
        let file = disk.file();
        let db = Db::open_with_backend(move || Ok(file.clone()), config.storage_cache)
            .expect("the database opens on what was synced");
        InProcessHost::start(&config, db)
    };
    let mut host = start(&disk);
    for (namespace, guest) in NAMESPACES {
        deploy(&host, namespace, guest).await;
    }
    disk.set_sync(sync);

    let mut model = Model::default();
    for cycle in 0..cuts {
        let alarms_now = if cycle % ALARM_EVERY == 0 {
            ALARMS_PER_CYCLE
        } else {
            0
        };
        let load = Load::new(&host.url, cycle, ROOMS, alarms_now, ALARM_DELAY_MS);
        let ticket_clients: Vec<_> = (0..TICKET_CLIENTS)
            .map(|_| tokio::spawn(sequence_client(load.clone(), TICKETS, rng.random())))
            .collect();
        let counter_clients: Vec<_> = (0..COUNTER_CLIENTS)
            .map(|_| tokio::spawn(sequence_client(load.clone(), COUNTERS, rng.random())))
            .collect();
        let chat_users: Vec<_> = (0..ROOMS * USERS_PER_ROOM)
            .map(|k| tokio::spawn(chat_user(load.clone(), k % ROOMS, k)))
            .collect();
        let alarm_clients: Vec<_> = (0..usize::from(alarms_now > 0))
            .map(|_| tokio::spawn(alarm_client(load.clone(), rng.random())))
            .collect();

        tokio::time::sleep(Duration::from_millis(rng.random_range(LOAD_MS))).await;
        // The order matters: an answer a client sees after `cut` may be one the host sent after
        // the power went, which a real host could not have.
        load.cut();
        disk.cut_power();
        let killed_at = now_ms();
        host.stop_abruptly();

        let floors = model.floors();
        for log in join_all_within(ticket_clients).await {
            model.record_sequence(TICKETS, &floors.tickets, log);
        }
        for log in join_all_within(counter_clients).await {
            model.record_sequence(COUNTERS, &floors.counters, log);
        }
        for log in join_all_within(chat_users).await {
            model.record_chat(&floors.rooms, log);
        }
        for log in join_all_within(alarm_clients).await {
            model.record_alarms(log);
        }

        let restart_at = now_ms();
        host = tokio::task::block_in_place(|| start(&disk));
        model.check_sequence(&host.url, TICKETS).await;
        model.check_sequence(&host.url, COUNTERS).await;
        model.check_chat(&host.url).await;
        // Every cut, not only those of cycles that set alarms: an alarm that fired must stay
        // fired once, whatever cut comes later.
        model
            .check_alarms(
                &host.url,
                &[host.url.clone()],
                ALARM_DELAY_MS.end,
                killed_at,
                restart_at,
            )
            .await;
    }
    host.stop_abruptly();
    let t = model.totals;
    for problem in t.problems.iter().take(20) {
        println!("problem: {problem}");
    }
    for error in t.errors.iter().take(20) {
        println!("unexpected response: {error}");
    }
    t
}

async fn deploy(host: &InProcessHost, namespace: &str, guest: &str) {
    let r = client()
        .put(host.at(&format!("/_admin/namespaces/{namespace}")))
        .bearer_auth(TOKEN)
        .body(std::fs::read(wasm(guest)).unwrap())
        .send()
        .await
        .expect("deploy request");
    assert_eq!(
        r.status(),
        200,
        "deploying {guest}: {}",
        r.text().await.unwrap()
    );
}

fn summary(what: &str, cuts: usize, t: &Totals, seed: u64, started: Instant) -> String {
    format!(
        "{what}: cuts {cuts}, acknowledged {} (tickets {}, increments {}, chat {}, alarms {}), \
         in doubt {}, lost {}, duplicated {}, alarms late {}, alarms due while down {}, \
         seed {seed}, {:.0} s",
        t.tickets + t.increments + t.chat + t.alarms,
        t.tickets,
        t.increments,
        t.chat,
        t.alarms,
        t.in_doubt,
        t.lost,
        t.duplicated,
        t.late,
        t.due_while_down,
        started.elapsed().as_secs_f64(),
    )
}

/// The environment variable `name` as a number, if set.
fn env_number<T: std::str::FromStr>(name: &str) -> Option<T> {
    let value = std::env::var(name).ok()?;
    Some(
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name} is not a number: {value:?}")),
    )
}
