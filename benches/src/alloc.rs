//! A global allocator that counts live heap bytes while switched on.
//!
//! Counting is off by default so that timed phases pay one relaxed load per allocation and
//! nothing else; memory phases switch it on around the allocations they measure.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};

static ON: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);

/// Delegates to the system allocator, counting bytes between [`start`] and [`stop`].
pub struct CountingAlloc;

// Safety: every method forwards its arguments unchanged to `System`, which upholds the
// `GlobalAlloc` contract; the counter never touches the memory handed out.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        // Safety: forwarded as received.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
        // Safety: `ptr` was allocated by `System` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if ON.load(Ordering::Relaxed) {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        // Safety: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

/// Net bytes allocated while counting was on, since the last [`start`].
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Resets the count and switches counting on.
pub fn start() {
    LIVE.store(0, Ordering::Relaxed);
    ON.store(true, Ordering::Relaxed);
}

/// Switches counting off; returns the net bytes counted.
pub fn stop() -> isize {
    ON.store(false, Ordering::Relaxed);
    live()
}

/// Whether the running binary installed [`CountingAlloc`] (else memory figures are absent).
pub fn installed() -> bool {
    // A probe far larger than what other threads allocate or free meanwhile.
    const PROBE: usize = 16 << 20;
    start();
    let probe = std::hint::black_box(vec![0u8; PROBE]);
    let counted = live() >= PROBE as isize / 2;
    drop(probe);
    stop();
    counted
}
