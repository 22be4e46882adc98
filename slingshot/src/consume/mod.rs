//! Running a service: its consume loop (one delivery's way from the queue to
//! an ack, a retry or a dead letter), reconnecting when the consumer stops,
//! routing outputs, and a once-mode service's outbox relay.

pub(crate) mod relay;
pub(crate) mod routing;
pub(crate) mod supervise;
pub(crate) mod worker;
