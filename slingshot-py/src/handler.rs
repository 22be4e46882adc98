//! A Python `process` as a slingshot `Handler`: the call on the runtime's
//! blocking thread, its result and exceptions translated, and a pooled
//! SQLAlchemy connection as its database.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::prelude::*;

use slingshot::__private::{prepare_with, Backing, Executor, Handler, Outcome, Parts};
use slingshot::db::once::{Dialect, OnceConn, OnceSql, SqlValue};
use slingshot::db::{within, ConnectionKind, DbConnection, DbError, DbTarget, Late};
use slingshot::CaseDomain;
use slingshot::{Error, Failure, FailureKind, RequestContext};

use crate::case::Case;
use crate::failure::Failed;
use crate::files::Files;
use crate::thread_state;

/// The Python module that calls `process` and owns the SQLAlchemy engine.
const RUNTIME: &str = "slingshot._runtime";

/// A registered Python service.
struct Registered {
    /// The user's `process`.
    process: Py<PyAny>,
    /// `slingshot._runtime.call`.
    call: Py<PyAny>,
}

static SERVICES: Mutex<Option<HashMap<String, Arc<Registered>>>> = Mutex::new(None);

pub(crate) fn set(name: &str, process: Py<PyAny>, call: Py<PyAny>) {
    let mut services = SERVICES.lock().unwrap_or_else(|e| e.into_inner());
    services
        .get_or_insert_with(HashMap::new)
        .insert(name.to_string(), Arc::new(Registered { process, call }));
}

/// `ServiceDef::prepare` of every Python service: finds the callable
/// registered under the service's name and opens its pool. Blocking.
pub(crate) fn prepare(backing: Backing) -> Result<Arc<dyn Executor>, Error> {
    let registered = SERVICES
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .and_then(|services| services.get(backing.name).cloned())
        .ok_or_else(|| Error::Config(format!("no Python service {:?} is registered", backing.name)))?;
    prepare_with(PyHandler { registered }, backing)
}

struct PyHandler {
    registered: Arc<Registered>,
}

/// The request's facts and `emit`, as `slingshot._runtime.call` hands them
/// to `process`'s adapter: one object per request, whose fields become
/// Python objects only when they are read (a `slingshot.RequestContext` is
/// built from them only for a `process` that takes a `context`).
#[pyclass(module = "slingshot._native", name = "Request", frozen)]
pub struct Request(RequestContext);

#[pymethods]
impl Request {
    /// The service processing the request.
    #[getter]
    fn service(&self) -> &'static str {
        self.0.service
    }

    /// The request ID.
    #[getter]
    fn request(&self) -> u64 {
        self.0.request
    }

    /// 1 on the first try, 2 on the first retry, and so on.
    #[getter]
    fn attempt(&self) -> u32 {
        self.0.attempt
    }

    /// Whether the broker delivered this message before.
    #[getter]
    fn redelivered(&self) -> bool {
        self.0.redelivered
    }

    /// The request's trace ID.
    #[getter]
    fn trace_id(&self) -> &str {
        &self.0.trace_id
    }

    /// Emits `event` with `data`; `ValueError` for a name or data the
    /// runtime refuses.
    #[pyo3(signature = (event, data = ""))]
    fn emit(&self, event: &str, data: &str) -> PyResult<()> {
        self.0
            .emit(event, data)
            .map_err(|e| pyo3::exceptions::PyValueError::new_err(e.to_string()))
    }
}

impl Handler for PyHandler {
    type Connection = PyConnection;

    fn call(&self, request: u64, parts: &Parts<'_>, connection: &mut PyConnection) -> Outcome {
        let files = Files::new(parts.read_file.clone(), parts.write_file.clone());
        let ending = files.ending();
        let context = parts.context;
        let outcome = Python::attach(|py| {
            thread_state::keep(py);
            let files = Bound::new(py, files).map_err(|e| internal(py, e))?;
            let facts = Bound::new(py, Request(context.clone())).map_err(|e| internal(py, e))?;
            let db = connection.0.as_ref().map(|c| c.bind(py).clone());
            let answer =
                self.registered
                    .call
                    .bind(py)
                    .call1((self.registered.process.bind(py), request, files, db, facts));
            // The request's handles stop working with the call, whatever it
            // did; what they wrote is flushed below, without the interpreter.
            ending.stop();
            let answer = answer.map_err(|e| internal(py, e))?;
            translate(py, &answer, context.service, request, &context.trace_id)
        });
        let ended = ending.finish();
        if let (Ok(_), Err(e)) = (&outcome, ended) {
            return Err(Box::new(Failure {
                kind: FailureKind::Storage,
                message: format!("finishing the files written: {e}"),
                transient: true,
            }) as _);
        }
        outcome
    }

    fn case_domain() -> Option<CaseDomain> {
        None
    }
}

/// An error of the glue itself (not of `process`): a process error with the
/// Python exception's text.
fn internal(py: Python<'_>, e: PyErr) -> slingshot::AnyError {
    let text = e
        .value(py)
        .repr()
        .map(|r| r.to_string())
        .unwrap_or_else(|_| e.to_string());
    Box::new(Failure {
        kind: FailureKind::Process,
        message: format!("calling process failed: {text}"),
        transient: false,
    })
}

/// `slingshot._runtime.call` answers the outputs, `[(id, Case)...]` (each
/// case converted by [`crate::case`]), or a [`Failed`].
fn translate(py: Python<'_>, answer: &Bound<'_, PyAny>, service: &str, request: u64, trace_id: &str) -> Outcome {
    if let Ok(failed) = answer.cast::<Failed>() {
        let Failed { failure, traceback } = failed.get();
        tracing::warn!(
            service,
            request,
            trace_id,
            kind = failure.kind.as_str(),
            transient = failure.transient,
            "process raised {}\n{}",
            failure.message,
            traceback.as_deref().unwrap_or_default()
        );
        return Err(Box::new(failure.clone()));
    }
    let items: Vec<(u64, Bound<'_, Case>)> = answer.extract().map_err(|e| internal(py, e))?;
    Ok(items.into_iter().map(|(id, case)| (id, case.get().0.clone())).collect())
}

/// The database connection of a Python `process`: a SQLAlchemy `Connection`
/// checked out of the service's engine (`None` when no database is
/// configured). Dropping it rolls back what was not committed and returns it
/// to the pool.
pub(crate) struct PyConnection(Option<Py<PyAny>>);

fn runtime_call<'py, A: pyo3::call::PyCallArgs<'py>>(py: Python<'py>, function: &str, args: A) -> PyResult<Py<PyAny>> {
    let module = py.import(RUNTIME)?;
    Ok(module.getattr(function)?.call1(args)?.unbind())
}

fn connect_error(target: &str, py: Python<'_>, e: PyErr) -> DbError {
    let text = e
        .value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| e.to_string());
    DbError::Connect {
        target: target.to_string(),
        message: text,
    }
}

/// A Python service's SQLAlchemy engine.
pub(crate) struct PyPool {
    engine: Arc<Py<PyAny>>,
    /// The target without credentials, for messages.
    display: String,
    checkout_timeout: Duration,
    /// Whether the database is reached over the network.
    remote: bool,
}

impl DbConnection for PyConnection {
    const KIND: ConnectionKind = ConnectionKind::Any;
    type Pool = Option<PyPool>;
    type Guard = Box<PyConnection>;

    fn open_pool(target: Option<&DbTarget>, size: u32) -> Result<Self::Pool, DbError> {
        let Some(target) = target else {
            return Ok(None);
        };
        let (kind, location) = match target {
            DbTarget::Sqlite(path) => ("sqlite", path.display().to_string()),
            DbTarget::Postgres { .. } => ("postgres", target.url()),
        };
        let display = target.display();
        let checkout_timeout = target.checkout_timeout();
        Python::attach(|py| {
            runtime_call(
                py,
                "create_engine",
                (kind, location, size, checkout_timeout.as_secs_f64()),
            )
            .map(|engine| {
                Some(PyPool {
                    engine: Arc::new(engine),
                    display: display.clone(),
                    checkout_timeout,
                    remote: target.is_remote(),
                })
            })
            .map_err(|e| connect_error(&display, py, e))
        })
    }

    /// Once mode runs its statements through the SQLAlchemy connection
    /// (`slingshot._runtime.once_*`), in the transaction `process` uses.
    fn once(connection: &mut Self) -> Option<OnceConn<'_>> {
        connection.0.as_ref()?;
        Some(OnceConn::Other(connection as &mut dyn OnceSql))
    }

    /// A connection from the engine's pool, which waits at most the
    /// checkout timeout for one and pings it (`pool_pre_ping`). Nothing in
    /// the driver bounds that ping on a server that accepts TCP but does not
    /// answer, so for PostgreSQL the checkout runs on a thread of its own and
    /// is given up after the timeout; a connection it gets later is released
    /// on that thread (see `slingshot::db`).
    fn checkout(pool: &Self::Pool) -> Result<Self::Guard, DbError> {
        let Some(pool) = pool else {
            return Ok(Box::new(PyConnection(None)));
        };
        let (engine, display) = (pool.engine.clone(), pool.display.clone());
        let connect = move || {
            Python::attach(|py| {
                runtime_call(py, "connect", (engine.bind(py),))
                    .map(|c| Box::new(PyConnection(Some(c))))
                    .map_err(|e| connect_error(&display, py, e))
            })
        };
        if !pool.remote {
            return connect();
        }
        within(pool.checkout_timeout, connect).map_err(|late| DbError::Connect {
            target: pool.display.clone(),
            message: match late {
                Late::Elapsed => format!(
                    "no tested connection within {:.1} s (SLINGSHOT_DB_CHECKOUT_TIMEOUT_SECS)",
                    pool.checkout_timeout.as_secs_f64()
                ),
                other => format!("checking a connection out: {other}"),
            },
        })?
    }
}

/// The Python exception's text.
fn error_text(py: Python<'_>, e: PyErr) -> String {
    e.value(py)
        .str()
        .map(|s| s.to_string())
        .unwrap_or_else(|_| e.to_string())
}

impl PyConnection {
    /// Calls `slingshot._runtime.<function>(connection, *args)`.
    fn call_once<T: for<'a, 'py> FromPyObject<'a, 'py>>(
        &self,
        function: &str,
        args: Vec<Py<PyAny>>,
    ) -> Result<T, String> {
        let Some(connection) = &self.0 else {
            return Err("no database connection".into());
        };
        Python::attach(|py| {
            let mut all = vec![connection.clone_ref(py)];
            all.extend(args);
            let args = pyo3::types::PyTuple::new(py, all).map_err(|e| error_text(py, e))?;
            let module = py.import(RUNTIME).map_err(|e| error_text(py, e))?;
            let answer = module
                .getattr(function)
                .and_then(|f| f.call1(args))
                .map_err(|e| error_text(py, e))?;
            answer.extract::<T>().map_err(|e| error_text(py, e.into()))
        })
    }

    fn statement(sql: &str, params: Vec<SqlValue>) -> Vec<Py<PyAny>> {
        Python::attach(|py| {
            let values: Vec<Py<PyAny>> = params
                .into_iter()
                .map(|v| match v {
                    SqlValue::Int(i) => i.into_pyobject(py).map(|o| o.into_any().unbind()),
                    SqlValue::Text(t) => t.into_pyobject(py).map(|o| o.into_any().unbind()),
                    SqlValue::Null => Ok(py.None()),
                })
                .collect::<Result<_, _>>()
                .unwrap_or_default();
            let tuple = pyo3::types::PyTuple::new(py, values).map(|t| t.into_any().unbind());
            let sql = sql.into_pyobject(py).map(|o| o.into_any().unbind());
            match (sql, tuple) {
                (Ok(sql), Ok(tuple)) => vec![sql, tuple],
                _ => Vec::new(),
            }
        })
    }
}

impl OnceSql for PyConnection {
    fn dialect(&self) -> Dialect {
        match self.call_once::<String>("once_dialect", vec![]).as_deref() {
            Ok("sqlite") => Dialect::Sqlite,
            _ => Dialect::Postgres,
        }
    }

    fn placeholder(&self, _n: usize) -> String {
        match self.dialect() {
            // psycopg2's paramstyle.
            Dialect::Postgres => "%s".into(),
            // sqlite3's.
            Dialect::Sqlite => "?".into(),
        }
    }

    fn begin(&mut self, _sql: &str) -> Result<(), String> {
        // The drivers begin by themselves at the first statement, which is
        // the inbox's insert: on SQLite it takes the write lock there.
        self.call_once::<bool>("once_begin", vec![]).map(drop)
    }

    fn commit(&mut self) -> Result<(), String> {
        self.call_once::<bool>("once_commit", vec![]).map(drop)
    }

    fn rollback(&mut self) -> Result<(), String> {
        self.call_once::<bool>("once_rollback", vec![]).map(drop)
    }

    fn execute(&mut self, sql: &str, params: Vec<SqlValue>) -> Result<usize, String> {
        self.call_once::<usize>("once_execute", Self::statement(sql, params))
    }

    fn query(&mut self, sql: &str, params: Vec<SqlValue>) -> Result<Vec<Vec<SqlValue>>, String> {
        let rows: Vec<Vec<Option<PyValue>>> = self.call_once("once_query", Self::statement(sql, params))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                row.into_iter()
                    .map(|v| match v {
                        None => SqlValue::Null,
                        Some(PyValue::Int(i)) => SqlValue::Int(i),
                        Some(PyValue::Text(t)) => SqlValue::Text(t),
                    })
                    .collect()
            })
            .collect())
    }
}

/// A value of a row a Python driver read.
#[derive(FromPyObject)]
enum PyValue {
    Int(i64),
    Text(String),
}

impl Drop for PyConnection {
    fn drop(&mut self) {
        if let Some(connection) = self.0.take() {
            Python::attach(|py| {
                if let Err(e) = runtime_call(py, "release", (connection.bind(py),)) {
                    tracing::warn!("returning a database connection to the pool failed: {e}");
                }
            });
        }
    }
}
