//! Which namespaces' events run in the background: a namespace whose code costs others latency
//! (an event stopped on a limit, or more than its share of the CPU while others ran) has its
//! event loops moved to threads that get only the CPU time foreground threads leave. Per
//! namespace, not per object, because object names are free to an attacker. The README's
//! *Sharing the CPU with a busy guest* has the figures.

use crate::config::FUEL_PER_MS;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;
use tokio::sync::Notify;

/// How long a namespace stays in the background after its last event stopped on a limit.
pub const DEMOTION: Duration = Duration::from_secs(10);

/// How long a namespace stays in the background after a [`WINDOW`] in which it ran more than
/// [`SHARE`]: short, because taking the CPU is not a fault; it is renewed at every window in
/// which the namespace still does.
pub const SHARE_DEMOTION: Duration = Duration::from_secs(1);

/// The windows in which each namespace's guest instructions are counted.
pub const WINDOW: Duration = Duration::from_millis(20);

/// Guest instructions a namespace may run in one [`WINDOW`] while another namespace's objects
/// also run (as fuel counts them, see [`FUEL_PER_MS`]): a twentieth of one CPU, far above what
/// objects that answer in microseconds use. A namespace alone on the host may use every core.
pub const SHARE: u64 = WINDOW.as_millis() as u64 * FUEL_PER_MS / 20;

/// Why a namespace is in the background.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// One of its events stopped on a limit ([`DEMOTION`]).
    Limit,
    /// It ran more than [`SHARE`] beside other namespaces ([`SHARE_DEMOTION`]).
    Share,
}

impl Cause {
    /// The name the admin API gives it.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Limit => "limit",
            Cause::Share => "share",
        }
    }
}

/// The two runtimes, and which namespaces are in the background until when.
pub struct CpuShare {
    foreground: Handle,
    /// `Some` until dropped.
    background: Option<tokio::runtime::Runtime>,
    state: Arc<State>,
    /// After a limit: [`DEMOTION`] (shorter in tests).
    demotion: Duration,
}

struct State {
    demoted: RwLock<HashMap<String, (Instant, Cause)>>,
    /// When the last demotion ends (see [`ReviewSignal::nanos`]): past it no namespace is in
    /// the background, and [`CpuShare::in_background`] (asked at every event) takes no lock.
    last_until: AtomicU64,
    /// Guest instructions of each namespace in the current window; event loops hold their
    /// namespace's counter (see [`Meter`]).
    meters: Mutex<HashMap<String, Arc<AtomicU64>>>,
    wake: Arc<ReviewSignal>,
}

/// What wakes the review of shares.
struct ReviewSignal {
    /// Guest code ran: a window opens. A host where none runs is never woken.
    ran: Notify,
    /// A namespace went past [`SHARE`] before its window ended, and another ran too: the
    /// review need not wait for the end to see it, and objects that answer in microseconds no
    /// longer wait behind it.
    over: Notify,
    /// Namespaces that ran guest code in this window (at least: see [`State::review`]).
    active: AtomicUsize,
    /// When guest code first ran in this window ([`ReviewSignal::nanos`]), plus one (0: it has not):
    /// the window's length is measured from there, not from when the review task got to run.
    opened: AtomicU64,
    origin: Instant,
}

impl ReviewSignal {
    fn new() -> ReviewSignal {
        ReviewSignal {
            ran: Notify::new(),
            over: Notify::new(),
            active: AtomicUsize::new(0),
            opened: AtomicU64::new(0),
            origin: Instant::now(),
        }
    }

    /// `at` in nanoseconds since the review started: an instant an atomic can hold.
    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.origin).as_nanos()).unwrap_or(u64::MAX)
    }

    fn open(&self) {
        let now = self.nanos(Instant::now()).saturating_add(1);
        let _ = self
            .opened
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    /// When this window opened (now, if nothing ran in it yet).
    fn opened(&self) -> Instant {
        match self.opened.load(Ordering::Relaxed) {
            0 => Instant::now(),
            n => self.origin + Duration::from_nanos(n - 1),
        }
    }
}

/// Counts the guest instructions of one namespace's events, for [`SHARE`].
#[derive(Clone)]
pub struct Meter {
    fuel: Arc<AtomicU64>,
    wake: Arc<ReviewSignal>,
}

impl Meter {
    /// Counts guest instructions that ran.
    pub fn add(&self, fuel: u64) {
        let before = self.fuel.fetch_add(fuel, Ordering::Relaxed);
        if before == 0 && fuel > 0 {
            self.wake.open();
            self.wake.active.fetch_add(1, Ordering::Relaxed);
            self.wake.ran.notify_one();
        }
        let crossed = before <= SHARE && before + fuel > SHARE;
        if crossed && self.wake.active.load(Ordering::Relaxed) > 1 {
            // Only a review waiting now is woken: a stored permit would cut a later window short.
            self.wake.over.notify_waiters();
        }
    }
}

impl CpuShare {
    /// Starts the background threads, as many as the CPUs the host may use, and the review of
    /// shares (a [`WINDOW`] after guest code first runs in each). The foreground is the runtime
    /// this is called within.
    /// `demotion` is how long a limit sends a namespace to the background ([`DEMOTION`]).
    pub fn start(demotion: Duration) -> std::io::Result<CpuShare> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let background = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("dohost-background")
            .on_thread_start(crate::scheduling::enter_background_class)
            .enable_all()
            .build()?;
        let state = Arc::new(State {
            demoted: RwLock::new(HashMap::new()),
            last_until: AtomicU64::new(0),
            meters: Mutex::new(HashMap::new()),
            wake: Arc::new(ReviewSignal::new()),
        });
        tokio::spawn(review_shares(Arc::downgrade(&state), state.wake.clone()));
        Ok(CpuShare {
            foreground: Handle::current(),
            background: Some(background),
            state,
            demotion,
        })
    }

    /// Whether the objects of `namespace` run in the background now.
    pub fn in_background(&self, namespace: &str) -> bool {
        let now = self.state.nanos(Instant::now());
        if now >= self.state.last_until.load(Ordering::Acquire) {
            return false;
        }
        self.background_left(namespace).is_some()
    }

    /// How much longer `namespace` stays in the background, and why, if it is there.
    pub fn background_left(&self, namespace: &str) -> Option<(Duration, Cause)> {
        let demoted = self.state.demoted.read().unwrap_or_else(|e| e.into_inner());
        let (until, cause) = demoted.get(namespace)?;
        let left = until.saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some((left, *cause))
    }

    /// The runtime of the background class, or of the foreground.
    pub fn runtime(&self, background: bool) -> &Handle {
        match &self.background {
            Some(runtime) if background => runtime.handle(),
            _ => &self.foreground,
        }
    }

    /// Puts `namespace` in the background for the demotion from now (or longer, if it already
    /// is), because one of its events stopped on a limit (`why`).
    pub fn demote(&self, namespace: &str, why: &dyn std::fmt::Display) {
        // Logged once per demotion, and again when a limit comes on top of the share.
        let was = self.state.demote(namespace, self.demotion, Cause::Limit);
        if was != Some(Cause::Limit) {
            tracing::warn!(
                namespace,
                "runs in the background for {:?} (its events get only the CPU time others leave): {why}",
                self.demotion
            );
        }
    }

    /// The counter of `namespace`'s guest instructions, for its event loops.
    pub fn meter(&self, namespace: &str) -> Meter {
        let mut meters = self.state.meters.lock().unwrap_or_else(|e| e.into_inner());
        Meter {
            fuel: meters.entry(namespace.to_owned()).or_default().clone(),
            wake: self.state.wake.clone(),
        }
    }
}

impl State {
    /// Puts `namespace` in the background until `demotion` from now for `cause`, unless it
    /// already is for longer; what it was in the background for until now, if it was.
    fn demote(&self, namespace: &str, demotion: Duration, cause: Cause) -> Option<Cause> {
        let now = Instant::now();
        let mut demoted = self.demoted.write().unwrap_or_else(|e| e.into_inner());
        demoted.retain(|_, (until, _)| *until > now);
        let until = now + demotion;
        self.last_until
            .fetch_max(self.nanos(until), Ordering::AcqRel);
        match demoted.get_mut(namespace) {
            Some(current) => {
                let was = current.1;
                if until > current.0 {
                    *current = (until, cause);
                }
                Some(was)
            }
            None => {
                demoted.insert(namespace.to_owned(), (until, cause));
                None
            }
        }
    }

    /// Ends a window that lasted `elapsed` (a [`WINDOW`], or longer when the review ran late):
    /// when more than one namespace ran guest code in it, sends each that ran more than
    /// [`SHARE`] for that long to the background for [`SHARE_DEMOTION`].
    fn review(&self, elapsed: Duration) {
        let used: Vec<(String, u64)> = {
            let mut meters = self.meters.lock().unwrap_or_else(|e| e.into_inner());
            // Before the counts: a namespace that starts the next window meanwhile is counted
            // twice (a review too early, which finds it alone), never missed.
            self.wake.active.store(0, Ordering::Relaxed);
            self.wake.opened.store(0, Ordering::Relaxed);
            // Namespaces none of whose objects has an event loop are forgotten.
            meters.retain(|_, m| Arc::strong_count(m) > 1 || m.load(Ordering::Relaxed) > 0);
            meters
                .iter()
                .map(|(namespace, m)| (namespace.clone(), m.swap(0, Ordering::Relaxed)))
                .filter(|(_, fuel)| *fuel > 0)
                .collect()
        };
        if used.len() < 2 {
            return;
        }
        // A share is a rate: a review delayed by a busy foreground saw a longer window.
        let elapsed_ns = elapsed.as_nanos().max(1);
        let percent_of_a_cpu = |fuel: u64, ns: u128| {
            u128::from(fuel) * 100 * 1_000_000 / (ns * u128::from(FUEL_PER_MS))
        };
        for (namespace, fuel) in &used {
            let over = u128::from(*fuel) * WINDOW.as_nanos() > u128::from(SHARE) * elapsed_ns;
            if over
                && self
                    .demote(namespace, SHARE_DEMOTION, Cause::Share)
                    .is_none()
            {
                tracing::info!(
                    namespace,
                    "runs in the background for {SHARE_DEMOTION:?} (its events get only the CPU time others leave): its guests ran {}% of a CPU for {:.0} ms (more than {}%) while other namespaces' objects ran too",
                    percent_of_a_cpu(*fuel, elapsed_ns),
                    elapsed.as_secs_f64() * 1e3,
                    percent_of_a_cpu(SHARE, WINDOW.as_nanos()),
                );
            }
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        self.wake.nanos(at)
    }
}

/// Reviews the shares until the host's [`CpuShare`] is gone: a [`WINDOW`] after the first event
/// that ran guest code since the last review.
async fn review_shares(state: Weak<State>, wake: Arc<ReviewSignal>) {
    loop {
        wake.ran.notified().await;
        let opened = wake.opened();
        tokio::select! {
            () = tokio::time::sleep_until((opened + WINDOW).into()) => {}
            () = wake.over.notified() => {}
        }
        match state.upgrade() {
            Some(state) => state.review(opened.elapsed()),
            None => return,
        }
    }
}

impl Drop for CpuShare {
    fn drop(&mut self) {
        // Not `drop`: that waits for the threads, which a runtime's own thread may not do.
        if let Some(runtime) = self.background.take() {
            runtime.shutdown_background();
        }
        // The review of shares sees the state gone, and ends.
        self.state.wake.ran.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_demoted_namespace_runs_in_the_background_until_the_demotion_passes() {
        let shares = CpuShare::start(Duration::from_millis(600)).unwrap();
        assert!(!shares.in_background("a"));
        shares.demote("a", &"a test");
        assert!(shares.in_background("a"));
        let (left, cause) = shares.background_left("a").unwrap();
        assert!(left > Duration::ZERO && left <= Duration::from_millis(600));
        assert_eq!(cause, Cause::Limit);
        assert_eq!(shares.background_left("b"), None);
        assert!(!shares.in_background("b"), "other namespaces stay");

        // Its events run on a background thread: idle class.
        let policy = |background| {
            // SAFETY: a plain syscall about the calling thread.
            let task = async { unsafe { libc::sched_getscheduler(0) } };
            shares.runtime(background).spawn(task)
        };
        assert_eq!(policy(true).await.unwrap(), libc::SCHED_IDLE);
        assert_ne!(policy(false).await.unwrap(), libc::SCHED_IDLE);

        // Another failure renews it: checked past the first demotion's end, before the second's.
        let first = Instant::now();
        shares.demote("b", &"a test");
        tokio::time::sleep(Duration::from_millis(400)).await;
        shares.demote("b", &"a test");
        tokio::time::sleep_until((first + Duration::from_millis(700)).into()).await;
        assert!(shares.in_background("b"), "renewed by the second failure");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!shares.in_background("b"), "back once the demotion passed");
        // Dropped within the runtime, as a host is: must not panic.
        drop(shares);
    }

    // The review of shares runs only when the test awaits (a current-thread runtime), so each
    // window here is what the test counted into it.
    #[tokio::test]
    async fn a_namespace_that_runs_more_than_its_share_beside_others_goes_to_the_background() {
        let shares = CpuShare::start(DEMOTION).unwrap();
        let (busy, light) = (shares.meter("busy"), shares.meter("light"));

        busy.add(SHARE * 10);
        shares.state.review(WINDOW);
        assert!(
            !shares.in_background("busy"),
            "alone, it may use every core"
        );

        // A window the review reached late: the share is a rate.
        busy.add(SHARE * 3 / 2);
        light.add(SHARE / 100);
        shares.state.review(WINDOW * 2);
        assert!(
            !shares.in_background("busy"),
            "3.75% of a CPU is within the share"
        );

        busy.add(SHARE + 1);
        light.add(SHARE / 100);
        shares.state.review(WINDOW);
        assert!(shares.in_background("busy"));
        let (left, cause) = shares.background_left("busy").unwrap();
        assert!(left > Duration::ZERO && left <= SHARE_DEMOTION);
        assert_eq!(cause, Cause::Share);
        assert!(!shares.in_background("light"), "within its share");

        // A limit on top of the share: the limit's demotion and cause (and its warning).
        assert_eq!(
            shares.state.demote("busy", DEMOTION, Cause::Limit),
            Some(Cause::Share)
        );
        let (left, cause) = shares.background_left("busy").unwrap();
        assert!(left > SHARE_DEMOTION && cause == Cause::Limit);

        // A demotion for a limit is not cut short by a later one for the share.
        shares.demote("light", &"a test");
        light.add(SHARE + 1);
        busy.add(1);
        shares.state.review(WINDOW);
        let (left, cause) = shares.background_left("light").unwrap();
        assert!(left > SHARE_DEMOTION && cause == Cause::Limit);

        // Each window counts afresh, and a namespace none of whose event loops is left is
        // forgotten.
        assert_eq!(busy.fuel.load(Ordering::Relaxed), 0);
        drop(busy);
        shares.state.review(WINDOW);
        let meters = shares.state.meters.lock().unwrap();
        assert!(!meters.contains_key("busy") && meters.contains_key("light"));
    }

    #[tokio::test]
    async fn going_past_the_share_beside_others_is_reviewed_at_once() {
        let shares = CpuShare::start(DEMOTION).unwrap();
        let (busy, light) = (shares.meter("busy"), shares.meter("light"));
        light.add(1);
        // The review task sees the window open, and waits for its end.
        tokio::time::sleep(Duration::from_millis(1)).await;
        let crossed = Instant::now();
        busy.add(SHARE + 1);
        while !shares.in_background("busy") {
            assert!(crossed.elapsed() < WINDOW / 2, "not reviewed at once");
            tokio::time::sleep(Duration::from_micros(100)).await;
        }
        assert!(!shares.in_background("light"));
    }
}
