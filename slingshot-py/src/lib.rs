//! `slingshot._native`: the Rust half of the Python packages — Python services
//! registered with the slingshot runtime and run by it.
//!
//! Everything a Rust service gets (consuming, retries, dead letters,
//! confirms, staging, routing, the ops endpoint, the CLI) comes from the
//! `slingshot` crate unchanged; this module only registers a Python callable
//! as a service ([`register`]), runs the generated binary's command line for
//! it ([`main`]), gives Python the file handles and the database pool, and
//! calls services through `slingshot::Client` ([`client`]).
//! The Python side (`slingshot/_runtime.py`) calls `process` and classifies
//! what it raised.

mod case;
mod client;
mod failure;
mod files;
mod handler;
mod schemas;
mod testing;
mod thread_state;

use std::process::ExitCode;

use pyo3::prelude::*;

use slingshot::db::{ConnectionKind, SQLITE_PRAGMAS};
use slingshot::ServiceDef;

pub use case::Case;
pub use failure::Failed;
pub use files::{Files, Reader, Writer};

pyo3::create_exception!(
    slingshot,
    StorageError,
    pyo3::exceptions::PyOSError,
    "Object storage failed. `transient` is true when the store failed (retried without using an attempt); without it, or false, the request failed (retried, then dead-lettered)."
);
pyo3::create_exception!(
    slingshot,
    InvalidInput,
    pyo3::exceptions::PyValueError,
    "The request's input is invalid: a typed object (`slingshot.Object`, `slingshot.read_model`) that is not valid JSON or not valid as its model, or anything `process` raises it for. The request is dead-lettered at once, never retried (failure kind `invalid-input`). A typed object's exception has `bucket`, `key`, `type_name` and `path` (the offending field, `lines[2].amount`; `.` for the document itself)."
);
pyo3::create_exception!(
    slingshot,
    ObjectNotFound,
    StorageError,
    "The object `read_file` was asked for does not exist."
);

/// Registers `process` as the service `name` with sys-map `sys_map` (the
/// default location; `SLINGSHOT_SYS_MAP` overrides it). `call` is the Python
/// function that runs `process` for one request (`slingshot._runtime.call`).
/// Registering a name again replaces the earlier registration. A service
/// whose `process` takes no connection gets no database pool. `objects` are
/// its typed objects, `(reference, "read" | "write", type name, JSON Schema
/// as JSON text)`, shown by the AsyncAPI document and `NAME schema`.
#[pyfunction]
#[pyo3(signature = (name, sys_map, process, call, connection, once = false, objects = Vec::new()))]
#[allow(clippy::too_many_arguments)]
fn register(
    name: String,
    sys_map: String,
    process: Py<PyAny>,
    call: Py<PyAny>,
    connection: bool,
    once: bool,
    objects: Vec<(String, String, String, String)>,
) -> PyResult<()> {
    // Refused before it is leaked; `ServiceDef::register` applies the same rule.
    check_service_name(&name)?;
    let objects = schemas::parse(objects)?;
    // Leaked once per registration: a service definition lives as long as the program.
    let name: &'static str = Box::leak(name.into_boxed_str());
    ServiceDef::register(ServiceDef {
        name,
        sys_map: Box::leak(sys_map.into_boxed_str()),
        function: "process",
        connection: if connection {
            ConnectionKind::Any
        } else {
            ConnectionKind::None
        },
        once,
        prepare: handler::prepare,
        case_domain: || None,
        objects: |def| schemas::of(def.name),
    })
    .map_err(|e| match e {
        // The same rule and words as `#[slingshot::microservice]`.
        slingshot::Error::Config(message) => pyo3::exceptions::PyValueError::new_err(message),
        other => pyo3::exceptions::PyRuntimeError::new_err(other.to_string()),
    })?;
    handler::set(name, process, call);
    schemas::set(name, objects);
    Ok(())
}

/// The typed objects of the registered service `name`, as `NAME schema`
/// prints them: a JSON array of `{"reference", "direction", "type",
/// "schema"}`. `RuntimeError` if no service of that name is registered.
#[pyfunction]
fn object_schemas(name: &str) -> PyResult<String> {
    let def = ServiceDef::find(name).map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    Ok(schemas::to_json(&def.object_schemas()).to_string())
}

/// Raises `ValueError` unless `name` may name a service: the rule and the
/// words of `#[slingshot::microservice]` and `ServiceDef::register`.
#[pyfunction]
fn check_service_name(name: &str) -> PyResult<()> {
    slingshot_names::check_service_name(name)
        .map_err(|why| pyo3::exceptions::PyValueError::new_err(slingshot_names::invalid(name, why)))
}

/// Runs the service's command line (`run` when `argv` is empty, or `invoke`,
/// `check`, `dead-letters`, `topology`…) and returns the exit status: 0 on
/// success, 2 for a usage error, 1 otherwise. Blocks, without holding the
/// interpreter, until the service stops (SIGTERM or Ctrl-C drain it first).
#[pyfunction]
fn main(py: Python<'_>, name: &str, argv: Vec<String>) -> PyResult<u8> {
    let def = ServiceDef::find(name).map_err(|e| pyo3::exceptions::PyRuntimeError::new_err(e.to_string()))?;
    let code = py.detach(|| {
        // The service's threads keep their Python thread states while it
        // runs; its runtime is gone (and they with it) when this returns.
        let _keeping = thread_state::Keeping::start();
        slingshot::main_with_args(def, argv)
    });
    Ok(if code == ExitCode::SUCCESS {
        0
    } else if code == ExitCode::from(2) {
        2
    } else {
        1
    })
}

/// `"debug"` or `"release"`: how this extension was compiled (the benchmark
/// refuses to measure a debug build).
#[pyfunction]
fn build_profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(register, m)?)?;
    m.add_function(wrap_pyfunction!(main, m)?)?;
    m.add_function(wrap_pyfunction!(build_profile, m)?)?;
    m.add_function(wrap_pyfunction!(check_service_name, m)?)?;
    m.add_function(wrap_pyfunction!(object_schemas, m)?)?;
    m.add_class::<client::Client>()?;
    m.add_class::<client::Submission>()?;
    m.add_class::<Case>()?;
    m.add_class::<Failed>()?;
    m.add_class::<Files>()?;
    m.add_class::<Reader>()?;
    m.add_class::<Writer>()?;
    m.add_class::<handler::Request>()?;
    m.add_class::<testing::Harness>()?;
    m.add_class::<testing::Invocation>()?;
    // `slingshot.FailureKind` is built from this list; the Python side has no kind names of its own.
    m.add(
        "FAILURE_KINDS",
        pyo3::types::PyTuple::new(m.py(), failure::kind_names())?,
    )?;
    // What every SQLite connection runs first, as the Rust services' do.
    m.add("SQLITE_PRAGMAS", SQLITE_PRAGMAS)?;
    m.add("StorageError", m.py().get_type::<StorageError>())?;
    m.add("ObjectNotFound", m.py().get_type::<ObjectNotFound>())?;
    m.add("InvalidInput", m.py().get_type::<InvalidInput>())?;
    Ok(())
}
