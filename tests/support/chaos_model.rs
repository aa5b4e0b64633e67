//! The chaos test's model (`tests/chaos.rs`): what its clients were told, over all cycles, and
//! the checks that a restarted host still holds every acknowledged operation.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Range;
use std::time::Duration;

use futures::StreamExt;
use serde_json::Value;

use super::{client, json, now_ms, stats};

/// Ticket objects the clients share.
const TICKET_OBJECTS: usize = 4;
/// Counter objects the clients share.
const COUNTER_OBJECTS: usize = 200;
/// Alarms are set this far ahead: many come due while the host is down.
pub const ALARM_DELAY_MS: Range<u64> = 100..2_000;
/// An alarm must fire within this long of its time, or of the restart if it came due while the
/// host was down. Generous: the machine is a shared 2-core box, and this is not a latency test.
const ALARM_BOUND_MS: u64 = 10_000;

/// A counter-like namespace: `POST` adds one and answers the new total in `post_field`; `GET`
/// answers the total in `get_field`.
pub struct Sequences {
    pub namespace: &'static str,
    pub objects: usize,
    pub post_field: &'static str,
    pub get_field: &'static str,
}

pub const TICKETS: &Sequences = &Sequences {
    namespace: "tickets",
    objects: TICKET_OBJECTS,
    post_field: "ticket",
    get_field: "issued",
};

pub const COUNTERS: &Sequences = &Sequences {
    namespace: "counter",
    objects: COUNTER_OBJECTS,
    post_field: "count",
    get_field: "count",
};

impl Sequences {
    pub fn path(&self, object: usize) -> String {
        format!("/{}/o{object}/", self.namespace)
    }
}

/// What a client saw in one cycle.
#[derive(Default)]
pub struct ClientLog<T> {
    /// Acknowledged results, in the order they arrived.
    pub acks: Vec<T>,
    pub in_doubt: usize,
    /// The object (or room) of each in-doubt request.
    pub in_doubt_objects: Vec<usize>,
    pub errors: Vec<String>,
}

/// One counter or ticket object as the clients know it.
#[derive(Default)]
struct Sequence {
    /// Every number acknowledged, over all cycles.
    acked: BTreeSet<u64>,
    /// What this cycle did to it: only these requests can have changed it since it was last read,
    /// as a request in flight at a kill dies with the host.
    cycle: CycleCount,
    /// Its value after the last restart.
    read: u64,
}

/// Requests of one cycle to one object.
#[derive(Default)]
struct CycleCount {
    acked: u64,
    in_doubt: u64,
}

/// One chat room as its users know it.
#[derive(Default)]
struct Room {
    /// The acknowledged messages by id, over all cycles.
    acked: BTreeMap<u64, String>,
    cycle: CycleCount,
    /// Its newest id after the last restart.
    newest: u64,
}

/// One alarm object. It gets at most one alarm a cycle and, as every alarm fires before the next
/// cycle, each only once the last has fired: so its log lists every alarm it was ever given.
#[derive(Default)]
struct AlarmObject {
    /// The due times of its acknowledged alarms, over all cycles.
    acked: BTreeSet<u64>,
    /// This cycle's alarm, if acknowledged.
    cycle_acked: Option<u64>,
    cycle_in_doubt: usize,
    /// Its log as last read: a delivery, once logged, stays.
    log: Vec<Value>,
}

/// Counts over all cycles, and what went wrong.
#[derive(Default, Clone)]
pub struct Totals {
    pub tickets: usize,
    pub increments: usize,
    pub chat: usize,
    pub alarms: usize,
    pub in_doubt: usize,
    pub due_while_down: usize,
    pub lost: usize,
    pub duplicated: usize,
    pub out_of_order: usize,
    pub late: usize,
    /// What was lost, duplicated, out of order or late.
    pub problems: Vec<String>,
    /// Complete responses other than the expected one.
    pub errors: Vec<String>,
}

/// What the clients were told, over all cycles.
#[derive(Default)]
pub struct Model {
    tickets: HashMap<usize, Sequence>,
    counters: HashMap<usize, Sequence>,
    rooms: HashMap<usize, Room>,
    alarms: HashMap<usize, AlarmObject>,
    /// The acknowledged operations found missing, so that each counts once however many checks
    /// find it missing.
    lost: HashSet<String>,
    pub totals: Totals,
}

/// Per object, the highest number acknowledged before this cycle: every number acknowledged in
/// this cycle must be above it.
pub struct Floors {
    pub tickets: HashMap<usize, u64>,
    pub counters: HashMap<usize, u64>,
    pub rooms: HashMap<usize, u64>,
}

impl Model {
    fn objects(&mut self, seqs: &Sequences) -> &mut HashMap<usize, Sequence> {
        if seqs.namespace == TICKETS.namespace {
            &mut self.tickets
        } else {
            &mut self.counters
        }
    }

    pub fn floors(&self) -> Floors {
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
                .filter_map(|(&r, m)| Some((r, *m.acked.keys().last()?)))
                .collect(),
        }
    }

    /// Records one client's acknowledged numbers, in the order it got them.
    pub fn record_sequence(
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
            let s = objects.entry(object).or_default();
            s.cycle.acked += 1;
            if !s.acked.insert(n) {
                duplicated += 1;
                problems.push(format!("{path} answered {n} twice"));
            }
        }
        for &object in &log.in_doubt_objects {
            objects.entry(object).or_default().cycle.in_doubt += 1;
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
    pub fn record_chat(
        &mut self,
        floors: &HashMap<usize, u64>,
        log: ClientLog<(usize, u64, String)>,
    ) {
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
            let r = self.rooms.entry(room).or_default();
            r.cycle.acked += 1;
            if let Some(earlier) = r.acked.insert(id, text.clone()) {
                t.duplicated += 1;
                t.problems.push(format!(
                    "room r{room} broadcast both {earlier:?} and {text:?} as {id}"
                ));
            }
            t.chat += 1;
        }
        for room in log.in_doubt_objects {
            self.rooms.entry(room).or_default().cycle.in_doubt += 1;
        }
        t.in_doubt += log.in_doubt;
        t.errors.extend(log.errors);
    }

    /// Records one alarm client's alarms: acks are (alarm object, due time).
    pub fn record_alarms(&mut self, log: ClientLog<(usize, u64)>) {
        for (object, at) in log.acks {
            let a = self.alarms.entry(object).or_default();
            a.acked.insert(at);
            a.cycle_acked = Some(at);
            self.totals.alarms += 1;
        }
        for object in log.in_doubt_objects {
            self.alarms.entry(object).or_default().cycle_in_doubt += 1;
        }
        self.totals.in_doubt += log.in_doubt;
        self.totals.errors.extend(log.errors);
    }

    /// Reads every object of `seqs` ever touched: it must count every acknowledged number, and
    /// have grown since the last restart by no more than this cycle's acknowledged and in-doubt
    /// requests to it.
    pub async fn check_sequence(&mut self, url: &str, seqs: &Sequences) {
        let c = client();
        let objects: Vec<usize> = self.objects(seqs).keys().copied().collect();
        let reads: Vec<(usize, Value)> = futures::stream::iter(objects)
            .map(|object| {
                let req = c.get(format!("{url}{}", seqs.path(object)));
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
            let s = self.objects(seqs).get_mut(&object).unwrap();
            let missing: Vec<u64> = s.acked.range(value + 1..).copied().collect();
            let cycle = std::mem::take(&mut s.cycle);
            let before = std::mem::replace(&mut s.read, value);
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
            if value < before {
                self.totals.lost += 1;
                self.totals.problems.push(format!(
                    "{path} reads {value}, below the {before} it read after the last restart"
                ));
            }
            let excess = value.saturating_sub(before + cycle.acked + cycle.in_doubt);
            if excess > 0 {
                self.totals.duplicated += excess as usize;
                self.totals.problems.push(format!(
                    "{path} reads {value}: {before} after the last restart, and this cycle \
                     {} acknowledged plus {} in doubt",
                    cycle.acked, cycle.in_doubt
                ));
            }
        }
    }

    /// Reads every room's history: each message acknowledged since it last held them all must be
    /// in it, under its id, and its newest id is above the last restart's by no more than this
    /// cycle's acknowledged and in-doubt messages to it.
    pub async fn check_chat(&mut self, url: &str) {
        let c = client();
        for (&room, r) in &mut self.rooms {
            let body = read(c.get(format!("{url}/chat/r{room}/messages"))).await;
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
            for (&id, text) in r.acked.range(oldest.min(newest + 1)..) {
                if history.get(&id) != Some(text) && self.lost.insert(format!("r{room} {id}")) {
                    self.totals.lost += 1;
                    self.totals.problems.push(format!(
                        "room r{room} message {id} {text:?} is {:?} after a restart",
                        history.get(&id)
                    ));
                }
            }
            let cycle = std::mem::take(&mut r.cycle);
            let before = std::mem::replace(&mut r.newest, newest);
            let excess = newest.saturating_sub(before + cycle.acked + cycle.in_doubt);
            if excess > 0 {
                self.totals.duplicated += excess as usize;
                self.totals.problems.push(format!(
                    "room r{room}'s newest id is {newest}: {before} after the last restart, and \
                     this cycle {} acknowledged plus {} in doubt",
                    cycle.acked, cycle.in_doubt
                ));
            }
        }
    }

    /// Waits until no alarm is pending on any of `hosts` (bounded; a cluster's nodes each fire
    /// their shards' alarms), then reads the log of every alarm object ever used through `url`. Every alarm acknowledged, in any cycle, must be in it exactly once (a successful
    /// delivery commits its log entry, so a second entry is a second successful delivery); what
    /// was logged before stays; a new entry for an alarm not acknowledged needs an in-doubt set
    /// this cycle. This cycle's alarms, set at most `max_delay_ms` ahead, must have fired at or
    /// after their time and in time. Returns the latest firing of those, in ms after the alarm's
    /// time or, when it could not fire before the kill, after the restart.
    pub async fn check_alarms(
        &mut self,
        url: &str,
        hosts: &[String],
        max_delay_ms: u64,
        killed_at: u64,
        restart_at: u64,
    ) -> u64 {
        // Every alarm set this cycle, in doubt or not, was due by then.
        let due_by = killed_at + max_delay_ms;
        let deadline = due_by.max(now_ms()) + ALARM_BOUND_MS;
        for host in hosts {
            while now_ms() < deadline && stats(host).await["pending_alarms"] != 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let c = client();
        let logs: Vec<(usize, Value)> = futures::stream::iter(self.alarms.keys().copied())
            .map(|object| {
                let req = c.get(format!("{url}{}/alarm/log", alarm_path(object)));
                async move { (object, read(req).await) }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut worst = 0;
        for (object, log) in logs {
            let name = alarm_path(object);
            let log = log
                .as_array()
                .unwrap_or_else(|| panic!("{name} alarm log: {log}"))
                .clone();
            let a = self.alarms.get_mut(&object).unwrap();
            let t = &mut self.totals;
            let cycle_acked = a.cycle_acked.take();
            let cycle_in_doubt = std::mem::take(&mut a.cycle_in_doubt);
            let old = std::mem::replace(&mut a.log, log);
            let log = &a.log;
            if !log.starts_with(&old) {
                t.lost += 1;
                t.problems.push(format!(
                    "{name}'s alarm log changed: it was {old:?}, and is {log:?} after a restart"
                ));
            }
            let mut unknown: usize = 0;
            for (i, entry) in log.iter().enumerate().skip(old.len()) {
                let due = entry["due"].as_u64().unwrap_or_else(|| {
                    panic!("{name} logged a delivery without due time: {entry}")
                });
                if log[..i].iter().any(|e| e["due"] == due) {
                    t.duplicated += 1;
                    t.problems.push(format!(
                        "{name}'s alarm due at {due} was delivered successfully twice: {log:?}"
                    ));
                } else if !a.acked.contains(&due) {
                    unknown += 1;
                }
            }
            if unknown > cycle_in_doubt {
                t.duplicated += unknown - cycle_in_doubt;
                t.problems.push(format!(
                    "{name} logged {unknown} deliveries of alarms not acknowledged, after \
                     {cycle_in_doubt} in doubt this cycle: {log:?}"
                ));
            }
            for &at in &a.acked {
                let Some(entry) = log.iter().find(|e| e["due"] == at) else {
                    if Some(at) == cycle_acked {
                        let still = read(c.get(format!("{url}{name}/alarm"))).await;
                        if still["alarm"] == at {
                            t.late += 1;
                            t.problems.push(format!(
                                "alarm {name} due at {at} has not fired {} ms after the restart",
                                now_ms() - restart_at
                            ));
                            continue;
                        }
                    }
                    if self.lost.insert(format!("{name} {at}")) {
                        t.lost += 1;
                        t.problems.push(format!(
                            "alarm {name} due at {at} is not in its log: {log:?}"
                        ));
                    }
                    continue;
                };
                if Some(at) != cycle_acked {
                    continue;
                }
                if at > killed_at && at < restart_at {
                    t.due_while_down += 1;
                }
                let fired = entry["at"].as_u64().unwrap_or_default();
                // Fired before the kill: measured from its time; after the restart: from the
                // later of its time and the restart.
                let from = if fired < killed_at {
                    at
                } else {
                    at.max(restart_at)
                };
                if fired < at {
                    t.errors
                        .push(format!("alarm {name} due at {at} fired early, at {fired}"));
                }
                let delay = fired.saturating_sub(from);
                worst = worst.max(delay);
                if delay > ALARM_BOUND_MS {
                    t.late += 1;
                    t.problems.push(format!(
                        "alarm {name} due at {at} fired {delay} ms late (killed at {killed_at}, \
                         restarted at {restart_at})"
                    ));
                }
            }
        }
        worst
    }
}

/// The path of alarm object `object`.
pub fn alarm_path(object: usize) -> String {
    format!("/alarms/a{object}")
}

/// A GET on the restarted host, which must answer 200 with JSON. A 503 (in a cluster: the
/// object's shard is moving to another node) is asked again, for at most 30 s.
async fn read(req: reqwest::RequestBuilder) -> Value {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (status, body) = json(req.try_clone().expect("a GET clones")).await;
        if status == 503 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        }
        assert_eq!(status, 200, "{body}");
        return body;
    }
}
