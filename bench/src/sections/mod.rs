//! The sections of the benchmark, one module each, named as `SLINGSHOT_BENCH_ONLY` names them.

pub(crate) mod calls;
pub(crate) mod concurrency;
pub(crate) mod db;
pub(crate) mod file;
pub(crate) mod latency;
pub(crate) mod memory;
pub(crate) mod noop;
pub(crate) mod once;
pub(crate) mod python;
pub(crate) mod upper;
pub(crate) mod window;
