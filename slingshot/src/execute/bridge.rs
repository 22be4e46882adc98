//! Bridging the synchronous world of `process` to the async runtime: waiting on a future from a blocking thread.
//!
//! `process` runs on tokio's blocking pool (or, if it is `async`, inside a
//! per-thread current-thread runtime there), so it may block, but it must
//! never call `Handle::block_on` from inside a runtime. These helpers run the
//! future on the service's runtime and wait for it on a plain std channel,
//! which is safe from any thread that is not one of the runtime's workers.

use std::future::Future;
use std::sync::mpsc;

use tokio::runtime::Handle;

/// Runs `future` on `handle`'s runtime and blocks the calling thread until it
/// finishes. Call only from blocking threads, never from an async worker.
pub(crate) fn wait<F>(handle: &Handle, future: F) -> Result<F::Output, Cancelled>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (tx, rx) = mpsc::sync_channel(1);
    handle.spawn(async move {
        // The receiver only goes away if the waiting thread died; nothing to do then.
        let _ = tx.send(future.await);
    });
    rx.recv().map_err(|_| Cancelled)
}

/// The runtime shut down before the future finished.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("the runtime shut down before the operation finished")]
pub(crate) struct Cancelled;

thread_local! {
    static LOCAL: std::cell::OnceCell<tokio::runtime::Runtime> = const { std::cell::OnceCell::new() };
}

/// Drives an `async fn process` to completion on the current blocking thread,
/// in a current-thread runtime kept for that thread. The future may use tokio
/// timers and I/O; `read_file`/`write_file` and database calls inside it
/// block this thread only.
#[doc(hidden)]
pub fn block_on_local<F: Future>(future: F) -> F::Output {
    LOCAL.with(|cell| {
        let runtime = cell.get_or_init(|| {
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime,
                // Building a current-thread runtime only fails if the OS refuses
                // an epoll/eventfd: the process cannot do async work at all.
                Err(e) => panic!("slingshot: cannot build a runtime for async process: {e}"),
            }
        });
        runtime.block_on(future)
    })
}
