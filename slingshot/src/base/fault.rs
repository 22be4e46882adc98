//! Fault points: places where a test kills the process on purpose, to prove what a crash right there leaves behind.
//!
//! Compiled in only with the `fault-points` feature (the test suite's
//! services turn it on); without it [`point`] is an empty inline function.
//! With it, `SLINGSHOT_FAULT_POINT=<name>:<n>` aborts the process the `n`th
//! time it reaches the point `name` (counting from 1), as `kill -9` would:
//! no destructor, no flush, no ack.

/// Reached a fault point called `name`.
#[cfg(not(feature = "fault-points"))]
#[inline(always)]
pub(crate) fn point(_name: &str) {}

/// Reached a fault point called `name`: aborts if `SLINGSHOT_FAULT_POINT`
/// names it and this is the chosen visit.
#[cfg(feature = "fault-points")]
pub(crate) fn point(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static VISITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let value = std::env::var("SLINGSHOT_FAULT_POINT").ok()?;
        let (point, n) = value.split_once(':').unwrap_or((&value, "1"));
        Some((point.to_string(), n.parse().unwrap_or(1)))
    });
    if let Some((point, n)) = armed {
        if point == name && VISITS.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("fault point {name}: visit {n}, aborting");
            std::process::abort();
        }
    }
}
