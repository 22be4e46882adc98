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

#![warn(missing_docs, missing_debug_implementations, unreachable_pub)]

// The layers, from the ground up (ARCHITECTURE.md): each imports only from
// those above it in this list.
mod base;
pub mod broker;
pub mod client;
mod consume;
pub mod db;
mod error;
mod execute;
mod ops;
pub mod protocol;
mod runtime;
pub mod settings;
pub mod storage;
pub mod sysmap;
pub mod telemetry;
pub mod testing;

pub use base::case::{Case, CaseDomain, CaseValue};
pub use base::failure::{Failure, FailureKind, UnknownKind};
pub use base::stats::Stats;
pub use client::{CallError, CallOptions, Client};
pub use db::AnyConnection;
pub use diesel;
pub use error::{AnyError, Error};
pub use execute::contract::{Event, InvalidEvent, ReadFileFn, RequestContext, WriteFileFn, MAX_EVENT_DATA};
pub use execute::service::ServiceDef;
pub use execute::staging::WrittenObject;
pub use execute::typed::{read_json, write_json, Direction, Json, JsonWriter, ObjectSchema};
pub use execute::writer::ObjectWriter;
pub use execute::Executed;
pub use ops::cli::{main, main_with_args};
pub use ops::deadletter;
pub use runtime::{Invocation, RunningService, Runtime};
pub use schemars;
pub use settings::Settings;
pub use slingshot_macros::{microservice, Case};
pub use storage::{ObjectError, ObjectReader};

/// What generated code names. Not part of the public API.
#[doc(hidden)]
pub mod __private {
    pub use crate::base::case::{Case, CaseDomain, CaseValue};
    pub use crate::db::{ConnectionKind, DbConnection, NoConnection};
    pub use crate::execute::bridge::block_on_local;
    pub use crate::execute::contract::{
        convert, returns, Conversion, Fallible, FormProbe, Outcome, Output, Outputs, Parts, Plain, PlainForm,
        ProcessError, RefParam, RequestId, Returns,
    };
    pub use crate::execute::service::{Handler, ServiceDef};
    pub use crate::execute::typed::{ObjectParam, ObjectSchema};
    pub use crate::execute::{prepare, prepare_with, Backing, Executor};
    pub use crate::ops::cli::{main, main_named};
    pub use ::inventory;
    pub use ::std;
}
