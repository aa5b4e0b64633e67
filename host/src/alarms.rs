//! Alarms: one timer for every object's alarm.
//!
//! Waiting alarms cost one entry in an ordered set each, not a task or a timer: a single loop
//! sleeps until the earliest is due (or the schedule changes), then hands due alarms to their
//! objects through the same queue as every other event. The schedule mirrors the durable
//! `alarms` table: it is loaded at start-up (so alarms that came due while the host was down fire
//! at once) and told of every change once its commit is durable.
//!
//! Delivery is at least once: when the handler fails, the alarm is retried after 2 s, 4 s, 8 s,
//! ... at most [`MAX_RETRIES`] times, then dropped.

use crate::clock::now_ms;
use crate::names::ObjectId;
use crate::objects::Objects;
use crate::storage::Alarm;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

/// Retries after the first failed delivery.
pub const MAX_RETRIES: u32 = 6;

/// The first retry's delay; each later one doubles it.
const FIRST_BACKOFF_MS: u64 = 2_000;

/// The alarm schedule of a host.
#[derive(Default)]
pub struct Alarms {
    schedule: Mutex<Schedule>,
    changed: Notify,
}

#[derive(Default)]
struct Schedule {
    /// (when to deliver, object), earliest first. Alarms being delivered are not in it.
    queue: BTreeSet<(u64, ObjectId)>,
    entries: HashMap<ObjectId, Entry>,
}

struct Entry {
    alarm: Alarm,
    /// When to deliver next: the alarm's time, or later for a retry.
    fire_at: u64,
    retries: u32,
}

impl Schedule {
    fn remove(&mut self, id: &ObjectId) {
        if let Some(old) = self.entries.remove(id) {
            self.queue.remove(&(old.fire_at, *id));
        }
    }

    fn insert(&mut self, id: ObjectId, alarm: Alarm, fire_at: u64, retries: u32) {
        self.remove(&id);
        self.queue.insert((fire_at, id));
        self.entries.insert(
            id,
            Entry {
                alarm,
                fire_at,
                retries,
            },
        );
    }
}

impl Alarms {
    /// Schedules alarms read from the database.
    pub fn load(&self, alarms: Vec<(ObjectId, Alarm)>) {
        let mut schedule = self.schedule.lock().unwrap();
        for (id, alarm) in alarms {
            let at = alarm.at;
            schedule.insert(id, alarm, at, 0);
        }
        drop(schedule);
        self.changed.notify_one();
    }

    /// An object's alarm was durably set (`Some`) or deleted (`None`).
    pub fn changed(&self, id: ObjectId, alarm: Option<Alarm>) {
        let mut schedule = self.schedule.lock().unwrap();
        match alarm {
            Some(alarm) => {
                let at = alarm.at;
                schedule.insert(id, alarm, at, 0);
            }
            None => schedule.remove(&id),
        }
        drop(schedule);
        self.changed.notify_one();
    }

    /// Unschedules the alarms of the objects `which` picks (their shard moved to another node,
    /// which fires them now).
    pub fn forget_where(&self, which: impl Fn(&ObjectId) -> bool) {
        let mut schedule = self.schedule.lock().unwrap();
        let gone: Vec<ObjectId> = schedule
            .entries
            .keys()
            .filter(|id| which(id))
            .copied()
            .collect();
        for id in gone {
            schedule.remove(&id);
        }
    }

    /// How many alarms are scheduled (including those being delivered).
    pub fn pending(&self) -> usize {
        self.schedule.lock().unwrap().entries.len()
    }

    /// Delivers alarms as they come due, forever.
    pub async fn run(self: Arc<Self>, objects: Objects) {
        loop {
            let next = self.schedule.lock().unwrap().queue.first().copied();
            let now = now_ms();
            match next {
                None => self.changed.notified().await,
                Some((at, _)) if at > now => {
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(at - now)) => {}
                        () = self.changed.notified() => {}
                    }
                }
                Some(_) => {
                    for (id, alarm, retries) in self.take_due(now) {
                        tokio::spawn(self.clone().deliver(objects.clone(), id, alarm, retries));
                    }
                }
            }
        }
    }

    /// Takes every alarm due by `now` out of the queue (it stays scheduled).
    fn take_due(&self, now: u64) -> Vec<(ObjectId, Alarm, u32)> {
        let mut schedule = self.schedule.lock().unwrap();
        let mut due = Vec::new();
        while let Some(&(at, id)) = schedule.queue.first() {
            if at > now {
                break;
            }
            schedule.queue.pop_first();
            if let Some(entry) = schedule.entries.get(&id) {
                due.push((id, entry.alarm.clone(), entry.retries));
            }
        }
        due
    }

    async fn deliver(self: Arc<Self>, objects: Objects, id: ObjectId, alarm: Alarm, retries: u32) {
        let delivered = objects
            .alarm(&alarm.namespace, &alarm.name, alarm.at, retries)
            .await;
        let outcome = match &delivered {
            Ok(()) => "fired",
            Err(e) if e.is_overloaded() => "refused",
            Err(_) if retries < MAX_RETRIES => "retried",
            Err(_) => "dropped",
        };
        objects.metrics().alarm(&alarm.namespace, outcome);
        let tail = objects.runtime().tail();
        if tail.watched() {
            let fields =
                serde_json::json!({ "outcome": outcome, "due": alarm.at, "retries": retries });
            tail.send("alarm", &alarm.namespace, &alarm.name, fields);
        }
        let Err(e) = delivered else {
            // The event's commit has already told us whether the alarm is gone or re-armed.
            let mut schedule = self.schedule.lock().unwrap();
            if schedule.entries.get(&id).is_some_and(|e| e.alarm == alarm) {
                // Delivered, but its object no longer had this alarm (it moved or went).
                schedule.remove(&id);
            }
            return;
        };
        let give_up = {
            let mut schedule = self.schedule.lock().unwrap();
            // Unless the object has set a new alarm meanwhile, retry this one.
            if !schedule.entries.get(&id).is_some_and(|e| e.alarm == alarm) {
                return;
            }
            if e.is_overloaded() {
                // The host had no room; the alarm did not fail. Again in 1 to 2 s, spread so that
                // alarms that all came due at once do not all come back at once.
                let delay = 1000 + rand::random_range(0..1000);
                tracing::debug!(namespace = %alarm.namespace, object = %id, "host overloaded, alarm again in {delay} ms");
                schedule.insert(id, alarm.clone(), now_ms() + delay, retries);
                false
            } else if retries < MAX_RETRIES {
                let delay = FIRST_BACKOFF_MS << retries;
                tracing::warn!(namespace = %alarm.namespace, object = %id, retry = retries + 1, "alarm failed, retrying in {delay} ms: {e}");
                schedule.insert(id, alarm.clone(), now_ms() + delay, retries + 1);
                false
            } else {
                tracing::error!(namespace = %alarm.namespace, object = %id, "alarm failed {} times, giving up: {e}", retries + 1);
                schedule.remove(&id);
                true
            }
        };
        self.changed.notify_one();
        if give_up
            && let Err(e) = objects
                .drop_alarm(&alarm.namespace, &alarm.name, alarm.at)
                .await
        {
            tracing::error!(namespace = %alarm.namespace, object = %id, "cannot delete the failed alarm: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alarm(at: u64, n: usize) -> (ObjectId, Alarm) {
        let name = format!("object-{n}");
        let id = ObjectId::new("ns", &name);
        let alarm = Alarm {
            at,
            namespace: "ns".into(),
            name: name.as_str().into(),
        };
        (id, alarm)
    }

    #[test]
    fn a_hundred_thousand_alarms_wait_in_one_schedule() {
        let alarms = Alarms::default();
        alarms.load((0..100_000).map(|n| alarm(1_000 + n as u64, n)).collect());
        assert_eq!(alarms.pending(), 100_000);
        // Only what is due comes out, earliest first; the rest keeps waiting.
        let due = alarms.take_due(1_009);
        assert_eq!(due.len(), 10);
        assert!(due.windows(2).all(|w| w[0].1.at <= w[1].1.at));
        assert_eq!(
            alarms.pending(),
            100_000,
            "taken alarms stay scheduled until handled"
        );
        assert!(alarms.take_due(1_009).is_empty());
    }

    #[test]
    fn a_durable_change_replaces_or_removes_the_alarm() {
        let alarms = Alarms::default();
        let (id, first) = alarm(5_000, 1);
        alarms.changed(id, Some(first.clone()));
        let moved = Alarm { at: 9_000, ..first };
        alarms.changed(id, Some(moved));
        assert!(
            alarms.take_due(5_000).is_empty(),
            "the old time no longer fires"
        );
        assert_eq!(alarms.take_due(9_000).len(), 1);
        alarms.changed(id, None);
        assert_eq!(alarms.pending(), 0);
    }
}
