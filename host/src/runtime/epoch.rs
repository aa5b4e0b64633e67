//! The engine's epoch: a wall-clock deadline and regular yields for running guest code.

use crate::scheduling::in_background;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use wasmtime::Engine;

/// How often the engine's epoch advances. At each tick a running guest checks its deadline and,
/// once it has run a whole tick, yields to the async runtime and to the kernel, so that a busy
/// guest delays other objects by about a tick at most (README:
/// *Sharing the CPU with a busy guest*).
pub(super) const EPOCH_TICK: Duration = Duration::from_micros(250);

/// The tick while a background-class event runs: its threads give the CPU back to the kernel at
/// each one, so a woken foreground thread need not wait for the scheduler's own tick.
const BACKGROUND_TICK: Duration = Duration::from_micros(50);

/// Advances the engine's epoch every [`EPOCH_TICK`] while some guest code runs (every
/// [`BACKGROUND_TICK`] while some of the background class does), until dropped.
///
/// An idle host has no guest to interrupt, so the thread parks instead of waking a thousand
/// times a second for nothing: [`EpochTicker::busy`] marks guest code running and wakes it.
pub(super) struct EpochTicker {
    /// Guest calls in progress (events and instantiations).
    busy: AtomicUsize,
    /// Those of them on threads of the background class.
    background: AtomicUsize,
    /// Whether the thread is parked for want of guest code to interrupt (and not waiting for its
    /// next tick, which an unpark would only cost a wake-up).
    idle: AtomicBool,
    stop: AtomicBool,
    thread: std::thread::Thread,
}

impl EpochTicker {
    pub(super) fn start(engine: Engine) -> std::io::Result<Arc<Self>> {
        let (tx, rx) = std::sync::mpsc::channel::<Arc<EpochTicker>>();
        let handle = std::thread::Builder::new()
            .name("dohost-epoch".into())
            .spawn(move || {
                let Ok(ticker) = rx.recv() else { return };
                while !ticker.stop.load(Ordering::Acquire) {
                    // Idle is announced before busy is checked, and busy counted before idle is
                    // checked (`busy`): one side sees the other, so no event waits for a tick
                    // from a parked thread. An unpark before the park makes it return at once.
                    ticker.idle.store(true, Ordering::SeqCst);
                    if ticker.busy.load(Ordering::SeqCst) == 0 {
                        std::thread::park();
                        continue;
                    }
                    ticker.idle.store(false, Ordering::SeqCst);
                    ticker.wait_for_tick();
                    engine.increment_epoch();
                }
            })?;
        let ticker = Arc::new(EpochTicker {
            busy: AtomicUsize::new(0),
            background: AtomicUsize::new(0),
            idle: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            thread: handle.thread().clone(),
        });
        // The thread holds the ticker only once it exists; it ends when `stop` is set.
        let _ = tx.send(ticker.clone());
        Ok(ticker)
    }

    /// Waits one tick: [`EPOCH_TICK`], or [`BACKGROUND_TICK`] while a background event runs. A
    /// background event starting unparks the thread, so that its first tick is not a whole
    /// [`EPOCH_TICK`] late; any other unpark (a foreground event starting) does not shorten it,
    /// or events starting at a high rate would make the epoch tick at that rate.
    fn wait_for_tick(&self) {
        let started = Instant::now();
        loop {
            let tick = if self.background.load(Ordering::Acquire) > 0 {
                BACKGROUND_TICK
            } else {
                EPOCH_TICK
            };
            match tick.checked_sub(started.elapsed()) {
                Some(left) if !left.is_zero() => std::thread::park_timeout(left),
                _ => return,
            }
        }
    }

    /// Marks guest code running until the guard is dropped; of the background class if called
    /// on one of its threads.
    pub(super) fn busy(self: &Arc<Self>) -> Busy {
        let background = in_background();
        let first_background = background && self.background.fetch_add(1, Ordering::AcqRel) == 0;
        let first = self.busy.fetch_add(1, Ordering::SeqCst) == 0;
        if (first && self.idle.load(Ordering::SeqCst)) || first_background {
            self.thread.unpark();
        }
        Busy(self.clone(), background)
    }

    pub(super) fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// Guest code is running: the epoch must advance. The flag: on a background thread.
pub(super) struct Busy(Arc<EpochTicker>, bool);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.1 {
            self.0.background.fetch_sub(1, Ordering::AcqRel);
        }
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}
