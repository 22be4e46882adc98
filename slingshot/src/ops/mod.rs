//! Operating services: the generated binary's command line, `check`, the
//! probes and metrics page, the AsyncAPI document, the topology drawing and
//! the dead-letter tools, and `call`.

pub(crate) mod asyncapi;
pub(crate) mod call;
pub(crate) mod check;
pub(crate) mod cli;
pub mod deadletter;
pub(crate) mod metrics;
pub(crate) mod probes;
pub(crate) mod reencrypt;
pub(crate) mod topology;
