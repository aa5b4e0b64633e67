//! Crash safety under chaos: the real `dohost serve` is `kill -9`ed at a random moment while
//! concurrent clients claim tickets, increment counters, chat and set alarms, then restarted on
//! the same data dir, cycle after cycle; after every restart everything that was acknowledged must
//! still be there.
//!
//! The test suite runs 3 cycles (about 15 s). The long run, whose summary line goes into
//! RELIABILITY.md (the guests must be built first, as `scripts/test` does):
//!
//! ```sh
//! cargo build --release --target wasm32-wasip2 \
//!   -p ticket-counter -p counter -p chat-room -p test-object
//! CHAOS_CYCLES=20 cargo test -p dohost --test chaos -- --nocapture
//! ```
//!
//! `CHAOS_SEED=n` repeats a run's random choices (which object each request goes to, alarm
//! delays, how long each cycle runs before the kill, how long the host stays down); the timing of
//! the requests themselves cannot be repeated. A run prints its seed first, one line per cycle,
//! and one summary line last, which it also writes to `target/chaos-summary.txt`:
//! `chaos: cycles 20, acknowledged N (tickets .., increments .., chat .., alarms ..), in doubt ..,
//! lost 0, duplicated 0, alarms late 0, ...`.
//!
//! An operation is *acknowledged* when its HTTP response arrived in full with the expected status
//! or, for a chat message, when the room's broadcast of it came back to its sender (the host sends
//! it only once the message is durable). An operation that was sent but not acknowledged is *in
//! doubt*: it may or may not have happened. One that could not even connect (the host was dead)
//! was never sent. Every client has an operation in flight at the kill, so each cycle leaves some
//! in doubt. The host runs with `--idle-timeout 1`, so objects also hibernate and wake from
//! storage between crashes. After each restart (the restart itself proves the database opens)
//! the test reads every object it ever touched and checks:
//!
//! - tickets (`ticket-counter`, 4 objects, 6 clients racing on them) and counters (`counter`, 200
//!   objects): no number was acknowledged twice; each client saw increasing numbers per object,
//!   above all numbers acknowledged in earlier cycles; the value read back is at least every
//!   acknowledged number (else they are lost) and at most acknowledged plus in doubt (else some
//!   increment happened twice);
//! - chat (`chat-room`, 4 rooms, 2 users each): every acknowledged message is in the room's
//!   history under the id it was broadcast with, and no id was broadcast for two messages;
//! - alarms (`test-object`: `POST /alarm/set?in=MS`, one object per alarm): every acknowledged
//!   alarm has fired, at or after its time, within 10 s of it or of the restart if it came due
//!   while the host was down. The object's alarm log tells a fired alarm from a lost one, which
//!   the session example cannot: its expired and its never-written sessions both answer 404.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use support::{Host, Message, Ws, client, json, now_ms};

/// The namespaces and the guests deployed as them.
const NAMESPACES: [(&str, &str); 4] = [
    ("tickets", "ticket_counter"),
    ("counter", "counter"),
    ("chat", "chat_room"),
    ("alarms", "test_object"),
];

const TICKET_OBJECTS: usize = 4;
const TICKET_CLIENTS: usize = 6;
const COUNTER_OBJECTS: usize = 200;
const COUNTER_CLIENTS: usize = 6;
const ROOMS: usize = 4;
const USERS_PER_ROOM: usize = 2;
/// At most this many messages are sent to one room in one cycle: fewer than the 100 a room keeps,
/// so every message acknowledged in a cycle is still in the history when the cycle is checked.
const ROOM_SENDS_PER_CYCLE: usize = 90;
const ALARM_CLIENTS: usize = 2;
/// At most this many alarms are set per cycle, which bounds the reads that check them.
const ALARMS_PER_CYCLE: usize = 300;
/// Alarms are set this far ahead: many come due while the host is down.
const ALARM_DELAY_MS: Range<u64> = 100..2_000;
/// How long the clients run before the kill.
const LOAD_MS: Range<u64> = 200..1_500;
/// How long the host stays down.
const DOWN_MS: Range<u64> = 200..800;
/// An alarm must fire within this long of its time, or of the restart if it came due while the
/// host was down. Generous: the machine is a shared 2-core box, and this is not a latency test.
const ALARM_BOUND_MS: u64 = 10_000;
/// How long a chat client waits for its own message to come back before counting it in doubt.
const ECHO_WAIT: Duration = Duration::from_secs(10);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_work_survives_kill_9_at_random_moments() {
    let cycles: usize = env_number("CHAOS_CYCLES").unwrap_or(3);
    let seed = env_number("CHAOS_SEED").unwrap_or_else(rand::random);
    println!("chaos: seed {seed}, {cycles} cycles (CHAOS_SEED={seed} repeats the random choices)");
    let mut rng = StdRng::seed_from_u64(seed);
    let started = Instant::now();

    let (mut host, _dir) = Host::start(&["--idle-timeout", "1"]);
    for (namespace, guest) in NAMESPACES {
        host.deploy(namespace, guest).await;
    }
    let mut model = Model::default();
    for cycle in 0..cycles {
        let before = model.totals.clone();
        let load = Arc::new(Load {
            client: client(),
            url: host.url.clone(),
            cycle,
            stop: AtomicBool::new(false),
            room_sends: (0..ROOMS).map(|_| AtomicUsize::new(0)).collect(),
            alarm_sends: AtomicUsize::new(0),
        });
        let ticket_clients: Vec<_> = (0..TICKET_CLIENTS)
            .map(|_| {
                let load = load.clone();
                let seed = rng.random();
                tokio::spawn(async move { sequence_client(load, TICKETS, seed).await })
            })
            .collect();
        let counter_clients: Vec<_> = (0..COUNTER_CLIENTS)
            .map(|_| {
                let load = load.clone();
                let seed = rng.random();
                tokio::spawn(async move { sequence_client(load, COUNTERS, seed).await })
            })
            .collect();
        let chat_users: Vec<_> = (0..ROOMS * USERS_PER_ROOM)
            .map(|k| tokio::spawn(chat_user(load.clone(), k % ROOMS, k)))
            .collect();
        let alarm_clients: Vec<_> = (0..ALARM_CLIENTS)
            .map(|k| {
                let load = load.clone();
                let seed = rng.random();
                tokio::spawn(async move { alarm_client(load, k, seed).await })
            })
            .collect();

        let load_ms = rng.random_range(LOAD_MS);
        tokio::time::sleep(Duration::from_millis(load_ms)).await;
        tokio::task::block_in_place(|| host.kill());
        // Measured once the process is gone: an alarm due after this cannot have fired before.
        let killed_at = now_ms();
        load.stop.store(true, Ordering::Relaxed);

        // Every client ends promptly: its requests fail, its socket ends, and it sees `stop`.
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
        let mut alarms = Vec::new();
        for log in join_all_within(alarm_clients).await {
            model.totals.alarms += log.acks.len();
            model.totals.in_doubt += log.in_doubt;
            model.totals.errors.extend(log.errors);
            alarms.extend(log.acks);
        }

        let down_ms = rng.random_range(DOWN_MS);
        tokio::time::sleep(Duration::from_millis(down_ms)).await;
        let restart_at = now_ms();
        tokio::task::block_in_place(|| host.restart());
        let ready_ms = now_ms() - restart_at;

        check_namespaces(&host).await;
        model.check_sequence(&host, TICKETS).await;
        model.check_sequence(&host, COUNTERS).await;
        model.check_chat(&host).await;
        let worst_alarm_ms = model
            .check_alarms(&host, &alarms, killed_at, restart_at)
            .await;
        let t = &model.totals;
        println!(
            "cycle {cycle}: load {load_ms} ms, down {down_ms} ms, restart {ready_ms} ms; \
             acknowledged tickets {}, increments {}, chat {}, alarms {} (due while down {}, \
             latest {worst_alarm_ms} ms after its time or the restart); in doubt {}; lost {}, \
             duplicated {}, out of order {}, alarms late {}",
            t.tickets - before.tickets,
            t.increments - before.increments,
            t.chat - before.chat,
            t.alarms - before.alarms,
            t.due_while_down - before.due_while_down,
            t.in_doubt - before.in_doubt,
            t.lost - before.lost,
            t.duplicated - before.duplicated,
            t.out_of_order - before.out_of_order,
            t.late - before.late,
        );
    }

    let t = &model.totals;
    for problem in t.problems.iter().take(50) {
        println!("problem: {problem}");
    }
    for error in t.errors.iter().take(50) {
        println!("unexpected response: {error}");
    }
    let summary = format!(
        "chaos: cycles {cycles}, acknowledged {} (tickets {}, increments {}, chat {}, alarms {}), \
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
    );
    println!("{summary}");
    let path = target_dir().join("chaos-summary.txt");
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
    assert!(
        t.due_while_down > 0,
        "no acknowledged alarm came due while the host was down, so firing after a restart went \
         untested: {summary}"
    );
}

/// A counter-like namespace: `POST` adds one and answers the new total in `post_field`; `GET`
/// answers the total in `get_field`.
struct Sequences {
    namespace: &'static str,
    objects: usize,
    post_field: &'static str,
    get_field: &'static str,
}

const TICKETS: &Sequences = &Sequences {
    namespace: "tickets",
    objects: TICKET_OBJECTS,
    post_field: "ticket",
    get_field: "issued",
};

const COUNTERS: &Sequences = &Sequences {
    namespace: "counter",
    objects: COUNTER_OBJECTS,
    post_field: "count",
    get_field: "count",
};

impl Sequences {
    fn path(&self, object: usize) -> String {
        format!("/{}/o{object}/", self.namespace)
    }
}

/// What the clients of one cycle share.
struct Load {
    client: reqwest::Client,
    url: String,
    cycle: usize,
    /// Set right after the kill: clients stop starting operations.
    stop: AtomicBool,
    /// Messages sent to each room this cycle.
    room_sends: Vec<AtomicUsize>,
    /// Alarms set this cycle.
    alarm_sends: AtomicUsize,
}

impl Load {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Waits for the kill, for a client with nothing left to do this cycle.
    async fn idle(&self) {
        while !self.stopped() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What one request came to.
enum Reply {
    /// The expected status and a JSON body, received in full.
    Acknowledged(Value),
    /// The connection was refused: the request never reached the host.
    NotSent,
    /// Sent, but no complete response came back.
    InDoubt,
    /// A complete response with another status or an unreadable body.
    Unexpected(String),
}

async fn call(req: reqwest::RequestBuilder, status: u16) -> Reply {
    let response = match req.send().await {
        Err(e) if e.is_connect() => return Reply::NotSent,
        Err(_) => return Reply::InDoubt,
        Ok(response) => response,
    };
    let got = response.status().as_u16();
    let Ok(body) = response.bytes().await else {
        return Reply::InDoubt;
    };
    let text = String::from_utf8_lossy(&body);
    if got != status {
        return Reply::Unexpected(format!("status {got}: {text}"));
    }
    match serde_json::from_slice(&body) {
        Ok(value) => Reply::Acknowledged(value),
        Err(e) => Reply::Unexpected(format!("not JSON ({e}): {text}")),
    }
}

/// What a client saw in one cycle.
#[derive(Default)]
struct ClientLog<T> {
    /// Acknowledged results, in the order they arrived.
    acks: Vec<T>,
    in_doubt: usize,
    /// The object of each in-doubt request (for counters and tickets).
    in_doubt_objects: Vec<usize>,
    errors: Vec<String>,
}

/// Claims tickets or increments counters on random objects until the kill: acks are (object,
/// number).
async fn sequence_client(load: Arc<Load>, seqs: &Sequences, seed: u64) -> ClientLog<(usize, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = ClientLog::default();
    while !load.stopped() {
        let object = rng.random_range(0..seqs.objects);
        let path = seqs.path(object);
        let req = load.client.post(format!("{}{path}", load.url));
        match call(req, 200).await {
            Reply::Acknowledged(body) => match body[seqs.post_field].as_u64() {
                Some(n) => log.acks.push((object, n)),
                None => log.errors.push(format!("POST {path}: {body}")),
            },
            Reply::NotSent => {}
            Reply::InDoubt => {
                log.in_doubt += 1;
                log.in_doubt_objects.push(object);
            }
            Reply::Unexpected(e) => {
                log.in_doubt += 1;
                log.in_doubt_objects.push(object);
                log.errors.push(format!("POST {path}: {e}"));
            }
        }
    }
    log
}

/// Chats in `room` as user number `k` of this cycle, one message at a time, each acknowledged by
/// its broadcast coming back; reconnects if the socket ends before the kill. Acks are (room, id,
/// text).
async fn chat_user(load: Arc<Load>, room: usize, k: usize) -> ClientLog<(usize, u64, String)> {
    let user = format!("c{}u{k}", load.cycle);
    let url = format!(
        "{}/chat/r{room}/ws?user={user}",
        load.url.replacen("http://", "ws://", 1)
    );
    let mut log = ClientLog::default();
    let mut sent = 0;
    'connect: while !load.stopped() {
        let mut ws =
            match tokio::time::timeout(ECHO_WAIT, tokio_tungstenite::connect_async(&url)).await {
                Ok(Ok((ws, _))) => ws,
                _ => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            };
        while !load.stopped() {
            if load.room_sends[room].fetch_add(1, Ordering::Relaxed) >= ROOM_SENDS_PER_CYCLE {
                load.idle().await;
                break 'connect;
            }
            sent += 1;
            let text = format!("{user}-{sent}");
            let echoed = match ws.send(Message::text(text.clone())).await {
                Ok(()) => echo(&mut ws, &text).await,
                Err(_) => None,
            };
            match echoed {
                Some(id) => log.acks.push((room, id, text)),
                None => {
                    log.in_doubt += 1;
                    continue 'connect;
                }
            }
        }
    }
    log
}

/// The id the room broadcast `text` with, once it comes back; `None` if the socket ends first
/// (or nothing comes within [`ECHO_WAIT`]).
async fn echo(ws: &mut Ws, text: &str) -> Option<u64> {
    let deadline = tokio::time::Instant::now() + ECHO_WAIT;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Ok(Some(Ok(Message::Text(t)))) => {
                let Ok(v) = serde_json::from_str::<Value>(t.as_str()) else {
                    continue;
                };
                if v["type"] == "message" && v["text"] == text {
                    return v["id"].as_u64();
                }
            }
            Ok(Some(Ok(Message::Close(_)) | Err(_)) | None) | Err(_) => return None,
            Ok(Some(Ok(_))) => {}
        }
    }
}

/// Sets alarms a random delay ahead, each on a new object: acks are (object name, alarm time).
async fn alarm_client(load: Arc<Load>, k: usize, seed: u64) -> ClientLog<(String, u64)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = ClientLog::default();
    let mut n = 0;
    while !load.stopped() {
        if load.alarm_sends.fetch_add(1, Ordering::Relaxed) >= ALARMS_PER_CYCLE {
            load.idle().await;
            break;
        }
        n += 1;
        let name = format!("c{}a{k}-{n}", load.cycle);
        let delay = rng.random_range(ALARM_DELAY_MS);
        let path = format!("/alarms/{name}/alarm/set?in={delay}");
        match call(load.client.post(format!("{}{path}", load.url)), 200).await {
            Reply::Acknowledged(body) => match body["alarm"].as_u64() {
                Some(at) => log.acks.push((name, at)),
                None => log.errors.push(format!("POST {path}: {body}")),
            },
            Reply::NotSent => {}
            Reply::InDoubt => log.in_doubt += 1,
            Reply::Unexpected(e) => {
                log.in_doubt += 1;
                log.errors.push(format!("POST {path}: {e}"));
            }
        }
    }
    log
}

/// Joins the clients of a cycle; they must all end within a minute of the kill.
async fn join_all_within<T>(handles: Vec<tokio::task::JoinHandle<T>>) -> Vec<T> {
    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(handles))
        .await
        .expect("clients still running a minute after the kill")
        .into_iter()
        .map(|r| r.expect("a client panicked"))
        .collect()
}

/// One counter or ticket object as the clients know it.
#[derive(Default)]
struct Sequence {
    /// Every number acknowledged, over all cycles.
    acked: BTreeSet<u64>,
    /// Requests that may or may not have counted.
    in_doubt: u64,
}

#[derive(Default, Clone)]
struct Totals {
    tickets: usize,
    increments: usize,
    chat: usize,
    alarms: usize,
    in_doubt: usize,
    due_while_down: usize,
    lost: usize,
    duplicated: usize,
    out_of_order: usize,
    late: usize,
    /// What was lost, duplicated, out of order or late.
    problems: Vec<String>,
    /// Complete responses other than the expected one.
    errors: Vec<String>,
}

/// What the clients were told, over all cycles.
#[derive(Default)]
struct Model {
    tickets: HashMap<usize, Sequence>,
    counters: HashMap<usize, Sequence>,
    /// Per room, the acknowledged messages by id.
    rooms: HashMap<usize, BTreeMap<u64, String>>,
    /// The acknowledged operations found missing, so that each counts once however many checks
    /// find it missing.
    lost: HashSet<String>,
    /// Per counter or ticket object, the most it ever read above its acknowledged and in-doubt
    /// requests, counted once.
    excess: HashMap<String, u64>,
    totals: Totals,
}

/// Per object, the highest number acknowledged before this cycle: every number acknowledged in
/// this cycle must be above it.
struct Floors {
    tickets: HashMap<usize, u64>,
    counters: HashMap<usize, u64>,
    rooms: HashMap<usize, u64>,
}

impl Model {
    fn objects(&mut self, seqs: &Sequences) -> &mut HashMap<usize, Sequence> {
        if seqs.namespace == TICKETS.namespace {
            &mut self.tickets
        } else {
            &mut self.counters
        }
    }

    fn floors(&self) -> Floors {
        let highest = |m: &HashMap<usize, Sequence>| {
            m.iter()
                .filter_map(|(&o, s)| Some((o, *s.acked.last()?)))
                .collect()
        };
        Floors {
            tickets: highest(&self.tickets),
            counters: highest(&self.counters),
            rooms: self
                .rooms
                .iter()
                .filter_map(|(&r, m)| Some((r, *m.keys().last()?)))
                .collect(),
        }
    }

    /// Records one client's acknowledged numbers, in the order it got them.
    fn record_sequence(
        &mut self,
        seqs: &Sequences,
        floors: &HashMap<usize, u64>,
        log: ClientLog<(usize, u64)>,
    ) {
        let mut problems = Vec::new();
        let (mut duplicated, mut out_of_order) = (0, 0);
        let mut last: HashMap<usize, u64> = HashMap::new();
        let objects = self.objects(seqs);
        for &(object, n) in &log.acks {
            let path = seqs.path(object);
            let above = last
                .insert(object, n)
                .unwrap_or(0)
                .max(floors.get(&object).copied().unwrap_or(0));
            if n <= above {
                out_of_order += 1;
                problems.push(format!("{path} answered {n} after {above}"));
            }
            if !objects.entry(object).or_default().acked.insert(n) {
                duplicated += 1;
                problems.push(format!("{path} answered {n} twice"));
            }
        }
        for &object in &log.in_doubt_objects {
            objects.entry(object).or_default().in_doubt += 1;
        }
        let t = &mut self.totals;
        if seqs.namespace == TICKETS.namespace {
            t.tickets += log.acks.len();
        } else {
            t.increments += log.acks.len();
        }
        t.in_doubt += log.in_doubt;
        t.duplicated += duplicated;
        t.out_of_order += out_of_order;
        t.problems.extend(problems);
        t.errors.extend(log.errors);
    }

    /// Records one chat user's acknowledged messages, in the order it got them.
    fn record_chat(&mut self, floors: &HashMap<usize, u64>, log: ClientLog<(usize, u64, String)>) {
        let t = &mut self.totals;
        let mut last: HashMap<usize, u64> = HashMap::new();
        for (room, id, text) in log.acks {
            let above = last
                .insert(room, id)
                .unwrap_or(0)
                .max(floors.get(&room).copied().unwrap_or(0));
            if id <= above {
                t.out_of_order += 1;
                t.problems.push(format!(
                    "room r{room} broadcast {text:?} as {id} after {above}"
                ));
            }
            if let Some(earlier) = self.rooms.entry(room).or_default().insert(id, text.clone()) {
                t.duplicated += 1;
                t.problems.push(format!(
                    "room r{room} broadcast both {earlier:?} and {text:?} as {id}"
                ));
            }
            t.chat += 1;
        }
        t.in_doubt += log.in_doubt;
        t.errors.extend(log.errors);
    }

    /// Reads every object of `seqs` ever touched: it must count every acknowledged number and no
    /// more than the acknowledged and in-doubt requests.
    async fn check_sequence(&mut self, host: &Host, seqs: &Sequences) {
        let c = client();
        let objects: Vec<usize> = self.objects(seqs).keys().copied().collect();
        let reads: Vec<(usize, Value)> = futures::stream::iter(objects)
            .map(|object| {
                let req = c.get(host.at(&seqs.path(object)));
                async move { (object, read(req).await) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        for (object, body) in reads {
            let path = seqs.path(object);
            let value = body[seqs.get_field]
                .as_u64()
                .unwrap_or_else(|| panic!("GET {path}: {body}"));
            let s = &self.objects(seqs)[&object];
            let missing: Vec<u64> = s.acked.range(value + 1..).copied().collect();
            let (acked, in_doubt) = (s.acked.len() as u64, s.in_doubt);
            let newly_lost = missing
                .iter()
                .filter(|n| self.lost.insert(format!("{path} {n}")))
                .count();
            if newly_lost > 0 {
                self.totals.lost += newly_lost;
                self.totals.problems.push(format!(
                    "{path} reads {value} after a restart, but {missing:?} were acknowledged"
                ));
            }
            let excess = value.saturating_sub(acked + in_doubt);
            let before = self.excess.entry(path.clone()).or_default();
            if excess > *before {
                self.totals.duplicated += (excess - *before) as usize;
                *before = excess;
                self.totals.problems.push(format!(
                    "{path} reads {value}, above the {acked} acknowledged plus {in_doubt} in doubt"
                ));
            }
        }
    }

    /// Reads every room's history: each message acknowledged since it last held them all must be
    /// in it, under its id.
    async fn check_chat(&mut self, host: &Host) {
        let c = client();
        for (&room, acked) in &self.rooms {
            let body = read(c.get(host.at(&format!("/chat/r{room}/messages")))).await;
            let history: BTreeMap<u64, String> = body
                .as_array()
                .unwrap_or_else(|| panic!("room r{room} history: {body}"))
                .iter()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap(),
                        m["text"].as_str().unwrap().into(),
                    )
                })
                .collect();
            let ids: Vec<u64> = history.keys().copied().collect();
            assert!(
                ids.windows(2).all(|w| w[1] == w[0] + 1),
                "room r{room} history has gaps: {ids:?}"
            );
            // Older messages left the history by design; they were checked in their cycle.
            let oldest = ids.first().copied().unwrap_or(u64::MAX);
            let newest = ids.last().copied().unwrap_or(0);
            for (&id, text) in acked.range(oldest.min(newest + 1)..) {
                if history.get(&id) != Some(text) && self.lost.insert(format!("r{room} {id}")) {
                    self.totals.lost += 1;
                    self.totals.problems.push(format!(
                        "room r{room} message {id} {text:?} is {:?} after a restart",
                        history.get(&id)
                    ));
                }
            }
        }
    }

    /// Waits until no alarm is pending (bounded), then checks that each alarm acknowledged this
    /// cycle fired at or after its time and in time. Returns the latest firing, in ms after the
    /// alarm's time or, when it could not fire before the kill, after the restart.
    async fn check_alarms(
        &mut self,
        host: &Host,
        alarms: &[(String, u64)],
        killed_at: u64,
        restart_at: u64,
    ) -> u64 {
        // Every alarm set this cycle, in doubt or not, was due by then.
        let due_by = killed_at + ALARM_DELAY_MS.end;
        let deadline = due_by.max(now_ms()) + ALARM_BOUND_MS;
        while now_ms() < deadline && host.stats().await["pending_alarms"] != 0 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let c = client();
        let logs: Vec<(&str, u64, Value)> = futures::stream::iter(alarms)
            .map(|(name, at)| {
                let req = c.get(host.at(&format!("/alarms/{name}/alarm/log")));
                async move { (name.as_str(), *at, read(req).await) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut worst = 0;
        for (name, at, log) in logs {
            if at > killed_at && at < restart_at {
                self.totals.due_while_down += 1;
            }
            let Some(fired) = log[0]["at"].as_u64() else {
                let still = read(c.get(host.at(&format!("/alarms/{name}/alarm")))).await;
                if still["alarm"] == at {
                    self.totals.late += 1;
                    self.totals.problems.push(format!(
                        "alarm {name} due at {at} has not fired {} ms after the restart",
                        now_ms() - restart_at
                    ));
                } else {
                    self.totals.lost += 1;
                    self.totals.problems.push(format!(
                        "alarm {name} due at {at} never fired and is gone: {still}"
                    ));
                }
                continue;
            };
            // Fired before the kill: measured from its time; after the restart: from the later of
            // its time and the restart.
            let from = if fired < killed_at {
                at
            } else {
                at.max(restart_at)
            };
            if fired < at {
                self.totals
                    .errors
                    .push(format!("alarm {name} due at {at} fired early, at {fired}"));
            }
            let delay = fired.saturating_sub(from);
            worst = worst.max(delay);
            if delay > ALARM_BOUND_MS {
                self.totals.late += 1;
                self.totals.problems.push(format!(
                    "alarm {name} due at {at} fired {delay} ms late (killed at {killed_at}, \
                     restarted at {restart_at})"
                ));
            }
        }
        worst
    }
}

/// The namespaces deployed before the first kill are all still served.
async fn check_namespaces(host: &Host) {
    let (status, body) = json(
        client()
            .get(host.at("/_admin/namespaces"))
            .bearer_auth(support::TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let names: BTreeSet<&str> = body["namespaces"]
        .as_array()
        .unwrap_or_else(|| panic!("{body}"))
        .iter()
        .filter_map(|n| n["namespace"].as_str())
        .collect();
    let deployed: BTreeSet<&str> = NAMESPACES.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, deployed, "namespaces after a restart");
}

/// A GET on the restarted host, which must answer 200 with JSON.
async fn read(req: reqwest::RequestBuilder) -> Value {
    let (status, body) = json(req).await;
    assert_eq!(status, 200, "{body}");
    body
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

/// Where the summary line is written: the workspace's `target/`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
}
