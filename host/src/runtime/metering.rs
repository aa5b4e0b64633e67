//! Counting an instance's guest instructions toward its namespace's share of the CPU.

use super::epoch::EPOCH_TICK;
use crate::config::FUEL_PER_MS;
use crate::cpu_share::{Meter, WINDOW};
use std::time::Instant;

/// The fuel of one call into the guest, counted on its namespace's [`Meter`]: at its end, and
/// for a call longer than a [`WINDOW`] also at each epoch tick, as the time since the last one.
/// The store's fuel is only up to date when guest code calls out or returns, yet a long event's
/// namespace must leave the foreground while it still runs. Short calls are not counted by
/// ticks, which would charge their host work as guest code.
pub(super) struct FuelCount {
    /// The fuel the call started with.
    budget: u64,
    started: Instant,
    /// Fuel counted at ticks.
    ticked: u64,
    /// The last tick the call was seen at.
    last: Option<Instant>,
}

impl FuelCount {
    pub(super) fn new(budget: u64, started: Instant) -> FuelCount {
        FuelCount {
            budget,
            started,
            ticked: 0,
            last: None,
        }
    }

    /// An epoch tick found the guest running: it ran since the last one, up to a tick's length
    /// (longer gaps are waits: a yield to the runtime, or the thread preempted).
    pub(super) fn tick(&mut self, now: Instant, meter: &Meter) {
        if now.saturating_duration_since(self.started) < WINDOW {
            return;
        }
        let Some(last) = self.last.replace(now) else {
            return;
        };
        let ran = now.saturating_duration_since(last).min(EPOCH_TICK);
        let fuel = u64::try_from(ran.as_nanos()).unwrap_or(u64::MAX) * FUEL_PER_MS / 1_000_000;
        self.ticked += fuel;
        meter.add(fuel);
    }

    /// The call ended with `left` fuel: counts what it ran beyond what its ticks counted, and
    /// starts the count afresh from there (the next event's start sets it anew).
    pub(super) fn end(&mut self, left: u64, meter: &Meter) {
        let used = self.budget.saturating_sub(left);
        meter.add(used.saturating_sub(self.ticked));
        *self = FuelCount::new(left, self.started);
    }
}
