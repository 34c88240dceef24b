//! A global allocator that counts live heap bytes, for the tests that prove memory returns
//! to its baseline. Include it with `#[path = "common/counting_alloc.rs"] mod counting_alloc;`
//! (it installs itself as the test binary's global allocator).
#![allow(unsafe_code, dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicIsize, Ordering};

/// Counts live heap bytes, delegating every allocation to the system allocator.
pub struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

thread_local! {
    /// Bytes allocated minus bytes freed by this thread: immune to other tests running in
    /// parallel in the same binary. (A const-initialised `Cell` never allocates.)
    static THREAD_NET: Cell<isize> = const { Cell::new(0) };
    /// Allocations this thread made.
    static THREAD_ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
    /// The largest allocation this thread made since `reset_thread_largest`.
    static THREAD_LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn count(delta: isize) {
    LIVE.fetch_add(delta, Ordering::Relaxed);
    // `try_with`: the slot is gone while the thread is being torn down.
    let _ = THREAD_NET.try_with(|net| net.set(net.get() + delta));
    if delta > 0 {
        let _ = THREAD_ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        let _ = THREAD_LARGEST.try_with(|n| n.set(n.get().max(delta as usize)));
    }
}

// Safety: every method forwards to `System` with the caller's own arguments, so `System`'s
// guarantees carry over unchanged; the counter has no effect on the memory handed out.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size() as isize);
        // Safety: forwarded as received (see above).
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        count(-(layout.size() as isize));
        // Safety: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Live heap bytes now.
pub fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// Bytes this thread allocated minus bytes it freed, since it started.
pub fn thread_net() -> isize {
    THREAD_NET.with(Cell::get)
}

/// Allocations this thread made since it started (whatever was freed since).
pub fn thread_allocations() -> usize {
    THREAD_ALLOCATIONS.with(Cell::get)
}

/// Forgets the largest allocation this thread made so far.
pub fn reset_thread_largest() {
    THREAD_LARGEST.with(|n| n.set(0));
}

/// The largest single allocation this thread made since [`reset_thread_largest`] (a
/// reallocation counts as an allocation of its new size).
pub fn thread_largest() -> usize {
    THREAD_LARGEST.with(Cell::get)
}
