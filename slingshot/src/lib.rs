//! slingshot: queue-driven pipeline microservices from one annotated function.
//!
//! ```no_run
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
//! ```
//!
//! The attribute checks the signature at compile time, registers the service,
//! and (unless `main = false`) generates `main`. See the README for the
//! contract, the sys-map protocol and the delivery guarantees.

#![warn(missing_docs)]

mod bridge;
pub mod broker;
pub mod case;
pub mod check;
pub mod contract;
pub mod db;
pub mod deadletter;
mod entry;
mod error;
pub mod metrics;
pub mod ops;
pub mod routing;
pub mod runtime;
pub mod service;
pub mod settings;
pub mod storage;
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
pub use runtime::{Invocation, RunningService, Runtime};
pub use service::{Failure, FailureKind, ServiceDef};
pub use settings::Settings;
pub use slingshot_macros::{microservice, Case};
pub use storage::{ObjectError, ObjectReader, ObjectWriter};

/// What generated code names. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::bridge::block_on_local;
    pub use crate::case::{Case, CaseDomain, CaseValue};
    pub use crate::contract::{
        convert, returns, Conversion, Fallible, Outcome, Output, Outputs, Parts, Plain, PlainForm, Probe, ProcessError,
        RefParam, RequestId, Returns,
    };
    pub use crate::db::{ConnectionKind, DbConnection, NoConnection};
    pub use crate::entry::{main, main_named};
    pub use crate::service::{prepare, Handler, ServiceDef};
    pub use ::inventory;
    pub use ::std;
}
