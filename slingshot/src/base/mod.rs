//! The words every layer shares: case values, failure kinds, an error's chain
//! on one line, URLs with their secrets redacted, and a service's live
//! counters. Nothing here imports the rest of the crate.

pub(crate) mod case;
pub(crate) mod chain;
pub(crate) mod failure;
pub(crate) mod fault;
pub(crate) mod redact;
pub(crate) mod stats;
