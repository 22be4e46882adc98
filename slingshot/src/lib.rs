//! slingshot: queue-driven pipeline microservices from one annotated function.
//!
//! ```
//! use slingshot::{AnyError, ReadFileFn, WriteFileFn};
//! use std::io::{Read, Write};
//!
//! #[slingshot::microservice(name = "shout", sys_map = "file:sysmap.json", main = false)]
//! fn process(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
//!     let mut text = String::new();
//!     read_file("in", request)?.read_to_string(&mut text)?;
//!     write_file("out", request)?.write_all(text.to_uppercase().as_bytes())?;
//!     Ok(vec![(request, text.len() > 100)])
//! }
//!
//! // Run it here and now on an in-memory harness: an object in, one out.
//! let harness = slingshot::testing::Harness::new("shout").object("in", 7, "hello");
//! let run = harness.invoke(7).expect("shout succeeds");
//! assert_eq!(run.executed.outputs.len(), 1);
//! assert_eq!(harness.read("out", 7).expect("written"), b"HELLO");
//! ```
//!
//! The attribute checks the signature at compile time, registers the service,
//! and (unless `main = false`) generates `main`. See the README for the
//! contract, the sys-map protocol and the delivery guarantees.

#![warn(missing_docs)]

pub mod asyncapi;
mod bridge;
pub mod broker;
pub mod case;
pub mod check;
mod connect;
pub mod contract;
pub mod db;
pub mod deadletter;
mod entry;
mod error;
pub mod execute;
pub mod failure;
mod journal;
pub mod metrics;
pub mod ops;
pub mod otel;
pub mod protocol;
pub mod redact;
pub mod routing;
pub mod runtime;
pub mod server_info;
pub mod service;
pub mod settings;
pub mod storage;
mod supervise;
pub mod sysmap;
pub mod telemetry;
pub mod testing;
pub mod topology;
pub mod worker;

pub use case::{Case, CaseDomain, CaseValue};
pub use contract::{ReadFileFn, RequestContext, WriteFileFn};
pub use db::AnyConnection;
pub use diesel;
pub use entry::{main, main_with_args};
pub use error::{AnyError, Error};
pub use failure::{Failure, FailureKind};
pub use runtime::{Invocation, RunningService, Runtime};
pub use service::ServiceDef;
pub use settings::Settings;
pub use slingshot_macros::{microservice, Case};
pub use storage::{ObjectError, ObjectReader, ObjectWriter};

/// What generated code names. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bridge::block_on_local;
    pub use crate::case::{Case, CaseDomain, CaseValue};
    pub use crate::contract::{
        convert, returns, Conversion, Fallible, FormProbe, Outcome, Output, Outputs, Parts, Plain, PlainForm,
        ProcessError, RefParam, RequestId, Returns,
    };
    pub use crate::db::{ConnectionKind, DbConnection, NoConnection};
    pub use crate::entry::{main, main_named};
    pub use crate::execute::prepare;
    pub use crate::service::{Handler, ServiceDef};
    pub use ::inventory;
    pub use ::std;
}
