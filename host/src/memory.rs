//! The host's allocator, and giving memory back to the kernel once objects go to sleep.
//!
//! A host at rest is mostly small long-lived records (an idle socket's task, its registry entry,
//! a sleeping object's bookkeeping) scattered among the holes left by short-lived buffers (every
//! connection's HTTP read and write buffers, every event's instance). glibc's malloc puts both in
//! the same pages, so after 10,000 WebSocket handshakes about 2 KiB per socket stayed resident in
//! pages that held one live record each. jemalloc keeps sizes apart, in slabs of one size class,
//! so the records pack together and the buffers' pages can be returned whole.

use crate::objects::Objects;
use std::time::Duration;

#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its first allocation: one background thread returns freed pages
/// to the kernel about a second after they were freed (the default is ten), rather than the
/// threads that allocate doing it on their way.
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8] =
    b"background_thread:true,max_background_threads:1,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// After instances are dropped, hands what they freed back to the kernel at once.
///
/// An instance frees its memory in one go when its object hibernates; waiting for the decay to
/// return it page by page would keep a host that just put thousands of objects to sleep as big
/// as at the peak for a while. Runs at most once a second, and only when some instance was
/// dropped since the last time.
pub async fn hand_back(objects: Objects) {
    let mut purged_at = 0;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let dropped = objects.dropped_instances();
        if dropped != purged_at {
            purged_at = dropped;
            let _ = tokio::task::spawn_blocking(purge).await;
        }
    }
}

/// Returns every arena's free pages to the kernel.
fn purge() {
    // "arena.<i>.purge" with jemalloc's MALLCTL_ARENAS_ALL (4096) for i: a command, with no
    // value in or out.
    let name = b"arena.4096.purge\0";
    // SAFETY: the name is NUL-terminated and the command takes and returns nothing.
    let failed = unsafe {
        tikv_jemalloc_sys::mallctl(
            name.as_ptr().cast(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            0,
        )
    };
    if failed != 0 {
        tracing::warn!("jemalloc refused to purge: error {failed}");
    }
}
