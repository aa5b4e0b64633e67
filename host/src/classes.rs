//! Scheduling classes of namespaces: which threads an object's events run on.
//!
//! Every object starts in the foreground: its event loop runs on the host's main runtime, beside
//! the tasks that answer HTTP and WebSocket clients. A namespace one of whose events is stopped
//! for exceeding a limit (CPU, memory, stack, wall-clock time, response size, storage quota) goes
//! to the background class for [`DEMOTION`] after that failure: its objects' event loops move,
//! each before its next event, to a runtime of background threads
//! ([`crate::scheduling::enter_background_class`]), which the kernel gives only the CPU time
//! foreground threads leave. A failing guest otherwise costs well-behaved objects latency through
//! host work no time slice can interrupt (see [`crate::scheduling`]); in the background it
//! costs them next to nothing, and it still runs at full speed on a machine with CPU to spare.
//!
//! The class is per namespace, not per object, because object names are free: an attacker
//! could give every attack a fresh object. A namespace is one deployed class of objects, so the
//! background is where the code that failed runs, with every object of it, until it has run
//! [`DEMOTION`] without another such failure.

use std::collections::HashMap;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::runtime::Handle;

/// How long a namespace stays in the background after its last event stopped on a limit.
pub const DEMOTION: Duration = Duration::from_secs(10);

/// The two runtimes, and which namespaces are in the background until when.
pub struct Classes {
    foreground: Handle,
    /// `Some` until dropped.
    background: Option<tokio::runtime::Runtime>,
    demoted: RwLock<HashMap<String, Instant>>,
    /// When the last demotion ends, in nanoseconds since `started`: past it no namespace is in
    /// the background, and [`Classes::in_background`] (asked at every event) takes no lock.
    last_until: AtomicU64,
    started: Instant,
    demotion: Duration,
}

impl Classes {
    /// Starts the background threads, as many as the CPUs the host may use. The foreground is
    /// the runtime this is called within.
    pub fn start(demotion: Duration) -> std::io::Result<Classes> {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let background = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("dohost-background")
            .on_thread_start(crate::scheduling::enter_background_class)
            .enable_all()
            .build()?;
        Ok(Classes {
            foreground: Handle::current(),
            background: Some(background),
            demoted: RwLock::new(HashMap::new()),
            last_until: AtomicU64::new(0),
            started: Instant::now(),
            demotion,
        })
    }

    /// Whether the objects of `namespace` run in the background now.
    pub fn in_background(&self, namespace: &str) -> bool {
        if self.nanos(Instant::now()) >= self.last_until.load(Ordering::Acquire) {
            return false;
        }
        self.background_left(namespace).is_some()
    }

    /// How much longer `namespace` stays in the background, if it is there.
    pub fn background_left(&self, namespace: &str) -> Option<Duration> {
        let demoted = self.demoted.read().unwrap_or_else(|e| e.into_inner());
        let left = demoted
            .get(namespace)?
            .saturating_duration_since(Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// The runtime of the background class, or of the foreground.
    pub fn runtime(&self, background: bool) -> &Handle {
        match &self.background {
            Some(runtime) if background => runtime.handle(),
            _ => &self.foreground,
        }
    }

    /// Puts `namespace` in the background until [`DEMOTION`] from now, because one of its events
    /// stopped on a limit (`why`).
    pub fn demote(&self, namespace: &str, why: &dyn std::fmt::Display) {
        let now = Instant::now();
        let mut demoted = self.demoted.write().unwrap_or_else(|e| e.into_inner());
        demoted.retain(|_, until| *until > now);
        let until = now + self.demotion;
        self.last_until
            .fetch_max(self.nanos(until), Ordering::AcqRel);
        if demoted.insert(namespace.to_owned(), until).is_none() {
            tracing::warn!(
                namespace,
                "runs in the background for {:?} (its events get only the CPU time others leave): {why}",
                self.demotion
            );
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.started).as_nanos()).unwrap_or(u64::MAX)
    }
}

impl Drop for Classes {
    fn drop(&mut self) {
        // Not `drop`: that waits for the threads, which a runtime's own thread may not do.
        if let Some(runtime) = self.background.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_demoted_namespace_runs_in_the_background_until_the_demotion_passes() {
        let classes = Classes::start(Duration::from_millis(600)).unwrap();
        assert!(!classes.in_background("a"));
        classes.demote("a", &"a test");
        assert!(classes.in_background("a"));
        let left = classes.background_left("a").unwrap();
        assert!(left > Duration::ZERO && left <= Duration::from_millis(600));
        assert_eq!(classes.background_left("b"), None);
        assert!(!classes.in_background("b"), "other namespaces stay");

        // Its events run on a background thread: idle class.
        let policy = |background| {
            // SAFETY: a plain syscall about the calling thread.
            let task = async { unsafe { libc::sched_getscheduler(0) } };
            classes.runtime(background).spawn(task)
        };
        assert_eq!(policy(true).await.unwrap(), libc::SCHED_IDLE);
        assert_ne!(policy(false).await.unwrap(), libc::SCHED_IDLE);

        // Another failure renews it: checked past the first demotion's end, before the second's.
        let first = Instant::now();
        classes.demote("b", &"a test");
        tokio::time::sleep(Duration::from_millis(400)).await;
        classes.demote("b", &"a test");
        tokio::time::sleep_until((first + Duration::from_millis(700)).into()).await;
        assert!(classes.in_background("b"), "renewed by the second failure");
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(!classes.in_background("b"), "back once the demotion passed");
        // Dropped within the runtime, as a host is: must not panic.
        drop(classes);
    }
}
