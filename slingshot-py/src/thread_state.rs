//! Python thread states that outlive one call: a runtime thread that runs
//! Python for a service keeps its thread state between requests, so that
//! attaching costs a GIL acquisition rather than a thread state (and its
//! frame stack, an `mmap`) created and destroyed for every request.

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::ffi;
use pyo3::Python;

/// Whether threads keep their states: only while `main` runs a service.
/// A harness or a client drops its runtime with the interpreter attached,
/// and a thread that gives its state back when it exits must attach: it
/// would wait for the thread that waits for it to exit.
static KEEPING: AtomicBool = AtomicBool::new(false);

/// Keeps thread states while it lives (around `slingshot::main_with_args`,
/// whose runtime it outlives: the runtime's threads exit while nothing
/// holds the interpreter).
pub(crate) struct Keeping(());

impl Keeping {
    pub(crate) fn start() -> Keeping {
        KEEPING.store(true, Ordering::SeqCst);
        Keeping(())
    }
}

impl Drop for Keeping {
    fn drop(&mut self) {
        KEEPING.store(false, Ordering::SeqCst);
    }
}

/// This thread's extra hold on its thread state, given back when the
/// thread exits.
struct Held;

impl Drop for Held {
    fn drop(&mut self) {
        // SAFETY: the matching release of the `PyGILState_Ensure` in
        // `keep`, on the thread that made it. Attaching again first (the
        // thread state is this thread's, so Ensure only takes the GIL), then
        // releasing twice: the second release deletes the state and the GIL
        // goes. Not once the interpreter is gone: the state went with it.
        unsafe {
            if ffi::Py_IsInitialized() == 0 {
                return;
            }
            let attached = ffi::PyGILState_Ensure();
            ffi::PyGILState_Release(ffi::PyGILState_STATE::PyGILState_LOCKED);
            ffi::PyGILState_Release(attached);
        }
    }
}

thread_local! {
    static HELD: Cell<Option<Held>> = const { Cell::new(None) };
}

/// Keeps this thread's Python thread state after the current attachment
/// ends, while a service runs (`Keeping`); the thread gives it back when it
/// exits.
pub(crate) fn keep(_py: Python<'_>) {
    if !KEEPING.load(Ordering::Relaxed) {
        return;
    }
    let _ = HELD.try_with(|held| {
        let current = held.take();
        let kept = match current {
            Some(kept) => kept,
            None => {
                // SAFETY: the thread is attached (`_py`), so this only counts
                // one more hold on its thread state; `Held` gives it back.
                unsafe {
                    ffi::PyGILState_Ensure();
                }
                Held
            }
        };
        // (No other `Held` may be made, or dropped: each gives a hold back.)
        held.set(Some(kept));
    });
}
