//! Hints to the kernel's CPU scheduler, so that a thread woken to answer a request does not wait
//! behind a thread running guest code (the measurements: README, *Sharing the CPU with a busy
//! guest*).
//!
//! Some guest work cannot yield for long (a big `memory.fill`, a large copy, tearing down a big
//! instance), and the kernel protects a running thread's slice until its next tick. So every host
//! thread asks for the shortest slice ([`use_short_slices`], Linux 6.12+, inherited by later
//! threads), and takes a long one only while it runs guest code that may not yield
//! ([`run_guest`], [`Heavy`]) or tears a big instance down ([`with_long_slice`]). Older kernels
//! ignore the request; the epoch tick's yield then bounds the wait.
//!
//! Slices cannot help against a guest that keeps failing on a limit: the uninterruptible runs
//! are then the host's own (unwinding, tearing down, discarding writes). Such objects run on
//! threads of the background class ([`enter_background_class`], `SCHED_IDLE`), which get only
//! the CPU other threads leave; [`crate::cpu_share`] decides which.

use std::cell::Cell;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The slice of host code: the shortest the kernel grants.
const SHORT_SLICE_NS: u64 = 100_000;
/// The slice of guest code: long enough that every host thread's is shorter.
const LONG_SLICE_NS: u64 = 3_000_000;

/// Whether slices are asked for: set by [`use_short_slices`] once the kernel took one.
static SUPPORTED: AtomicBool = AtomicBool::new(false);
/// The policy and nice value the host was started with, kept in every request: the slice is all
/// that changes (a host started under `nice` stays nice).
static POLICY: AtomicU32 = AtomicU32::new(0);
static NICE: AtomicI32 = AtomicI32::new(0);

thread_local! {
    /// Whether this thread holds the long slice now.
    static LONG: Cell<bool> = const { Cell::new(false) };
    /// Whether this thread is in the background class: it never asks for a slice, since asking
    /// would also name a policy, and an unprivileged thread cannot leave `SCHED_IDLE`.
    static BACKGROUND: Cell<bool> = const { Cell::new(false) };
}

/// `struct sched_attr` of `sched_setattr(2)`, in its first (48-byte) version.
#[derive(Default)]
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// The calling thread's scheduling attributes.
fn get_attr() -> std::io::Result<SchedAttr> {
    let mut attr = SchedAttr::default();
    let size = size_of::<SchedAttr>() as u32;
    // SAFETY: `attr` is writable for `size` bytes, for the calling thread (pid 0).
    let r = unsafe { libc::syscall(libc::SYS_sched_getattr, 0, &raw mut attr, size, 0) };
    if r == 0 {
        Ok(attr)
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Asks the kernel for a slice of `ns` for the calling thread, keeping its policy and nice value.
fn request_slice(ns: u64) -> std::io::Result<()> {
    let attr = SchedAttr {
        size: size_of::<SchedAttr>() as u32,
        policy: POLICY.load(Ordering::Relaxed),
        nice: NICE.load(Ordering::Relaxed),
        runtime: ns,
        ..SchedAttr::default()
    };
    // SAFETY: `attr` is a valid sched_attr of the size it states, for the calling thread (pid 0),
    // and the kernel only reads it.
    let r = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn set_slice(ns: u64) {
    if BACKGROUND.get() {
        return;
    }
    if SUPPORTED.load(Ordering::Relaxed) && request_slice(ns).is_err() {
        SUPPORTED.store(false, Ordering::Relaxed);
    }
}

/// Gives the calling thread, and every thread it creates from now on, the short slice, and turns
/// the long one on, if the kernel takes custom slices for the host's policy (`SCHED_OTHER` or
/// `SCHED_BATCH`, Linux 6.12 and later; older kernels accept the request and ignore it, so the
/// slice is read back). Called once at start, before the runtime's threads exist.
pub fn use_short_slices() {
    let outcome = get_attr().and_then(|attr| {
        let fair = [libc::SCHED_OTHER, libc::SCHED_BATCH].contains(&(attr.policy as i32));
        if !fair {
            return Err(std::io::Error::other(format!("policy {}", attr.policy)));
        }
        POLICY.store(attr.policy, Ordering::Relaxed);
        NICE.store(attr.nice, Ordering::Relaxed);
        request_slice(SHORT_SLICE_NS)?;
        let took = get_attr()?.runtime;
        if took != SHORT_SLICE_NS {
            return Err(std::io::Error::other(format!("the slice stayed {took} ns")));
        }
        Ok(())
    });
    match outcome {
        Ok(()) => SUPPORTED.store(true, Ordering::Relaxed),
        Err(e) => tracing::debug!(
            "no custom scheduling slices ({e}); a busy guest yields to others every epoch tick"
        ),
    }
}

/// Puts the calling thread in the background class for good: `SCHED_IDLE`, or nice 19 where that
/// is refused. No privilege is needed to lower one's own priority (only to raise it back, which
/// is why these threads are dedicated to it). Called at the start of each background thread.
pub fn enter_background_class() {
    BACKGROUND.set(true);
    let idle = libc::sched_param { sched_priority: 0 };
    // SAFETY: a valid sched_param, for the calling thread (pid 0).
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &idle) } == 0 {
        return;
    }
    let refused = std::io::Error::last_os_error();
    // SAFETY: plain syscalls on the calling thread.
    let niced = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 19) };
    tracing::debug!(
        "background thread: SCHED_IDLE refused ({refused}); nice 19: {}",
        if niced == 0 { "taken" } else { "refused too" }
    );
}

/// Whether the calling thread is in the background class.
pub fn in_background() -> bool {
    BACKGROUND.get()
}

/// Takes the long slice for this thread, until [`release_long_slice`].
fn hold_long_slice() {
    if !LONG.replace(true) {
        set_slice(LONG_SLICE_NS);
    }
}

fn release_long_slice() {
    if LONG.replace(false) {
        set_slice(SHORT_SLICE_NS);
    }
}

/// Whether an instance's guest code takes the long slice. Most events are short and small, and
/// asking the kernel twice per poll cost a fifth of the increment benchmark's throughput, so only
/// the ones that can run long without yielding do: those of an instance whose memory is big (they
/// can fill, copy or tear down that much at once), and an event that already ran past a tick.
///
/// It also keeps how long the current event waited outside guest code (in host calls such as a
/// stub call, or yielded), so that an event that waited for a millisecond and then runs for a few
/// microseconds is not taken for one that ran a whole tick.
#[derive(Clone, Default)]
pub struct Heavy(Arc<HeavyState>);

#[derive(Default)]
struct HeavyState {
    heavy: AtomicBool,
    /// Nanoseconds the event spent waiting since its start or its last yield.
    waited_ns: AtomicU64,
}

impl Heavy {
    /// From inside guest code (a host call, the memory limiter, the epoch callback): this event
    /// is heavy, from now on.
    pub fn mark(&self) {
        self.0.heavy.store(true, Ordering::Relaxed);
        hold_long_slice();
    }

    /// Sets whether the next event starts heavy, and starts its count of time waited.
    pub fn reset(&self, heavy: bool) {
        self.0.heavy.store(heavy, Ordering::Relaxed);
        self.0.waited_ns.store(0, Ordering::Relaxed);
    }

    pub fn is_set(&self) -> bool {
        self.0.heavy.load(Ordering::Relaxed)
    }

    /// How long the event waited outside guest code since it started or since this was last
    /// taken, which starts the count again.
    pub fn take_waited(&self) -> Duration {
        Duration::from_nanos(self.0.waited_ns.swap(0, Ordering::Relaxed))
    }

    fn add_waited(&self, waited: Duration) {
        let ns = u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX);
        self.0.waited_ns.fetch_add(ns, Ordering::Relaxed);
    }
}

/// Runs `f` with the long slice: for work an instance causes outside its calls, like tearing down
/// its memory.
pub fn with_long_slice<T>(f: impl FnOnce() -> T) -> T {
    let outermost = !LONG.get();
    hold_long_slice();
    let value = f();
    if outermost {
        release_long_slice();
    }
    value
}

/// Runs `guest` (a call into guest code), with the long slice during each poll once `heavy` is
/// set. A task can move between threads, so the slice follows the polls, not the task. The time
/// between a poll that left the guest waiting and the next is added to `heavy`'s time waited.
pub async fn run_guest<F: Future>(heavy: &Heavy, guest: F) -> F::Output {
    let mut guest = std::pin::pin!(guest);
    let mut waiting_since = None::<Instant>;
    std::future::poll_fn(|cx| {
        if let Some(since) = waiting_since.take() {
            heavy.add_waited(since.elapsed());
        }
        if heavy.is_set() {
            hold_long_slice();
        }
        let polled = guest.as_mut().poll(cx);
        release_long_slice();
        if polled.is_pending() {
            waiting_since = Some(Instant::now());
        }
        polled
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The calling thread's slice, as the kernel reports it.
    fn slice_ns() -> u64 {
        get_attr().expect("sched_getattr").runtime
    }

    #[test]
    fn guest_code_runs_with_the_long_slice_and_host_code_with_the_short_one() {
        // A thread of its own: the slice is per thread, and the test harness's are shared.
        std::thread::spawn(|| {
            let nice = get_attr().unwrap().nice;
            use_short_slices();
            if !SUPPORTED.load(Ordering::Relaxed) {
                // Before Linux 6.12 the kernel keeps its own slice; nothing here applies.
                eprintln!("this kernel does not take custom slices: {} ns", slice_ns());
                return;
            }
            assert_eq!(slice_ns(), SHORT_SLICE_NS);
            assert_eq!(get_attr().unwrap().nice, nice, "the nice value is kept");
            let inherited = std::thread::spawn(slice_ns).join().unwrap();
            assert_eq!(
                inherited, SHORT_SLICE_NS,
                "threads created later inherit it"
            );

            let during = with_long_slice(|| (slice_ns(), with_long_slice(slice_ns), slice_ns()));
            assert_eq!(during, (LONG_SLICE_NS, LONG_SLICE_NS, LONG_SLICE_NS));
            assert_eq!(
                slice_ns(),
                SHORT_SLICE_NS,
                "back to short after the outermost hold"
            );

            // A light event stays short. Once marked heavy (here in its second poll), every
            // poll of it holds the long slice; between polls the thread is short.
            let heavy = Heavy::default();
            let polls = std::cell::RefCell::new(Vec::new());
            let guest = run_guest(
                &heavy,
                std::future::poll_fn(|cx| {
                    polls.borrow_mut().push(slice_ns());
                    if polls.borrow().len() == 2 {
                        heavy.mark();
                        polls.borrow_mut().push(slice_ns());
                    }
                    if polls.borrow().len() < 5 {
                        cx.waker().wake_by_ref();
                        std::task::Poll::Pending
                    } else {
                        std::task::Poll::Ready(())
                    }
                }),
            );
            let mut guest = std::pin::pin!(guest);
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            while guest.as_mut().poll(&mut cx).is_pending() {
                assert_eq!(slice_ns(), SHORT_SLICE_NS, "between polls");
            }
            let long = LONG_SLICE_NS;
            assert_eq!(
                *polls.borrow(),
                [SHORT_SLICE_NS, SHORT_SLICE_NS, long, long, long]
            );
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_background_thread_is_idle_class_and_asks_for_no_slice() {
        std::thread::spawn(|| {
            enter_background_class();
            let attr = get_attr().unwrap();
            assert_eq!(attr.policy, libc::SCHED_IDLE as u32);
            let runtime = attr.runtime;
            // Asking would name SCHED_OTHER: refused without privilege, undone with it.
            with_long_slice(|| {
                let attr = get_attr().unwrap();
                assert_eq!(
                    (attr.policy, attr.runtime),
                    (libc::SCHED_IDLE as u32, runtime)
                );
            });
            assert_eq!(get_attr().unwrap().policy, libc::SCHED_IDLE as u32);
        })
        .join()
        .unwrap();
    }
}
