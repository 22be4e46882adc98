//! A service as the macro defines it: the `Handler` it generates, the `ServiceDef` registered with `inventory`, and the executor that runs one request end to end (process, stage, upload).

use std::path::PathBuf;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::runtime::Handle;

use crate::bridge;
use crate::case::{CaseDomain, CaseValue};
use crate::contract::{Outcome, Parts, ReadFileFn, RequestContext, WriteFileFn};
use crate::db::{ConnectionKind, DbConnection, DbError, DbTarget};
use crate::error::{AnyError, Error};
use crate::storage::staging::{Staging, WrittenObject};
use crate::storage::{ObjectError, ObjectReader, ObjectStore, ObjectWriter};
use crate::sysmap::SysMap;

/// What `#[slingshot::microservice]` implements for the annotated function.
#[doc(hidden)]
pub trait Handler: Default + Send + Sync + 'static {
    /// The connection type `process` takes (`NoConnection` if none).
    type Connection: DbConnection;
    /// Calls `process`. Runs on a blocking thread.
    fn call(&self, request: u64, parts: &Parts<'_>, connection: &mut Self::Connection) -> Outcome;
    /// The values the function's case type can take, if its return type names it.
    fn case_domain() -> Option<CaseDomain>;
}

/// A service linked into this binary, registered by `#[slingshot::microservice]`.
#[derive(Clone, Copy)]
pub struct ServiceDef {
    /// The service's name: its sys-map endpoint.
    pub name: &'static str,
    /// The sys-map given in the attribute (`SLINGSHOT_SYS_MAP` overrides it).
    pub sys_map: &'static str,
    /// The annotated function's name.
    pub function: &'static str,
    /// The database the function's connection parameter needs.
    pub connection: ConnectionKind,
    #[doc(hidden)]
    pub prepare: fn(Backing) -> Result<Arc<dyn Executor>, Error>,
    #[doc(hidden)]
    pub case_domain: fn() -> Option<CaseDomain>,
}

impl std::fmt::Debug for ServiceDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDef")
            .field("name", &self.name)
            .field("sys_map", &self.sys_map)
            .field("function", &self.function)
            .field("connection", &self.connection)
            .finish_non_exhaustive()
    }
}

inventory::collect!(ServiceDef);

impl ServiceDef {
    /// Every service linked into this binary, by name.
    pub fn all() -> Vec<&'static ServiceDef> {
        let mut all: Vec<_> = inventory::iter::<ServiceDef>.into_iter().collect();
        all.sort_by_key(|d| d.name);
        all
    }

    /// The service called `name`, if one is linked in.
    pub fn named(name: &str) -> Option<&'static ServiceDef> {
        inventory::iter::<ServiceDef>.into_iter().find(|d| d.name == name)
    }

    /// Like [`ServiceDef::named`], with an error that lists the services there are.
    pub fn find(name: &str) -> Result<&'static ServiceDef, Error> {
        Self::named(name).ok_or_else(|| {
            let known: Vec<_> = Self::all().iter().map(|d| d.name).collect();
            Error::Config(format!(
                "no service {name:?} is linked into this binary (services: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })
    }
}

/// What an executor needs from the runtime.
#[doc(hidden)]
pub struct Backing {
    pub name: &'static str,
    pub sysmap: SysMap,
    pub store: Arc<dyn ObjectStore>,
    pub database: Option<DbTarget>,
    pub pool_size: u32,
    pub staging_dir: PathBuf,
    pub handle: Handle,
    pub stats: Arc<crate::metrics::Stats>,
}

/// One request to execute.
#[derive(Debug, Clone)]
#[doc(hidden)]
pub struct Job {
    pub request: u64,
    pub attempt: u32,
    pub redelivered: bool,
    pub trace_id: String,
}

/// A request `process` handled and whose files are uploaded.
#[derive(Debug, Clone, Default)]
pub struct Executed {
    /// The outputs `process` returned.
    pub outputs: Vec<(u64, CaseValue)>,
    /// The objects it wrote, now uploaded.
    pub written: Vec<WrittenObject>,
}

/// Why a request failed; carried in dead-letter headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum FailureKind {
    /// The body is not a decimal `u64`.
    Malformed,
    /// `process` returned an error.
    Process,
    /// `process` panicked.
    Panic,
    /// Object storage failed.
    Storage,
    /// The database failed.
    Database,
    /// The broker failed.
    Broker,
}

impl FailureKind {
    /// The name used in headers and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Malformed => "malformed",
            FailureKind::Process => "process-error",
            FailureKind::Panic => "panic",
            FailureKind::Storage => "storage",
            FailureKind::Database => "database",
            FailureKind::Broker => "broker",
        }
    }
}

/// A failed request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", kind.as_str())]
pub struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// The error, with its causes.
    pub message: String,
    /// Whether an outside system failed (S3, the database, the broker) rather
    /// than this request: such failures are retried until the system is back
    /// and do not count towards `SLINGSHOT_MAX_ATTEMPTS`.
    pub transient: bool,
}

impl Failure {
    /// A failure of this request.
    pub(crate) fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            transient: false,
        }
    }

    /// A failure of an outside system.
    pub(crate) fn outage(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            transient: true,
            ..Failure::new(kind, message)
        }
    }

    /// Classifies an error `process` returned. Storage and database errors it
    /// passed on with `?` (anywhere in the error's chain) keep their kind, and
    /// count as outages when the system failed rather than the request.
    fn from_process(error: AnyError) -> Self {
        let message = error_chain(&*error);
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&*error);
        while let Some(e) = cause {
            if let Some(object) = e.downcast_ref::<ObjectError>() {
                return Failure {
                    transient: object.is_transient(),
                    ..Failure::new(FailureKind::Storage, message)
                };
            }
            if let Some(db) = e.downcast_ref::<DbError>() {
                return Failure {
                    transient: matches!(db, DbError::Connect { .. }),
                    ..Failure::new(FailureKind::Database, message)
                };
            }
            if let Some(query) = e.downcast_ref::<diesel::result::Error>() {
                return Failure {
                    transient: is_lost_connection(query),
                    ..Failure::new(FailureKind::Database, message)
                };
            }
            cause = e.source();
        }
        Failure::new(FailureKind::Process, message)
    }
}

/// Whether a diesel error means the connection, not the query, failed.
fn is_lost_connection(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    match error {
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand, _) => true,
        Error::BrokenTransactionManager => true,
        // libpq reports a server that went away mid-query this way.
        Error::DatabaseError(DatabaseErrorKind::Unknown, info) => {
            let text = info.message();
            text.contains("server closed the connection")
                || text.contains("terminating connection")
                || text.contains("no connection to the server")
                || text.contains("could not connect")
        }
        _ => false,
    }
}

/// `error: cause: cause`, on one line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// Runs requests of one service. Object-safe, so the runtime holds services
/// of any connection type side by side.
#[doc(hidden)]
pub trait Executor: Send + Sync {
    /// Processes one request: `process` on a blocking thread with a pooled
    /// connection, then uploads what it wrote. Nothing is uploaded if it fails.
    fn execute(self: Arc<Self>, job: Job) -> BoxFuture<'static, Result<Executed, Failure>>;
}

struct Execution<H: Handler> {
    handler: H,
    pool: <H::Connection as DbConnection>::Pool,
    backing: Backing,
}

/// Builds the executor of handler `H` (referenced from the generated `ServiceDef`). Blocking: opens the pool.
#[doc(hidden)]
pub fn prepare<H: Handler>(backing: Backing) -> Result<Arc<dyn Executor>, Error> {
    let pool = H::Connection::open_pool(backing.database.as_ref(), backing.pool_size)?;
    Ok(Arc::new(Execution {
        handler: H::default(),
        pool,
        backing,
    }))
}

impl<H: Handler> Executor for Execution<H> {
    fn execute(self: Arc<Self>, job: Job) -> BoxFuture<'static, Result<Executed, Failure>> {
        Box::pin(async move {
            let staging = Arc::new(Staging::new(&self.backing.staging_dir));
            let this = self.clone();
            let staged = staging.clone();
            let started = std::time::Instant::now();
            let outcome = tokio::task::spawn_blocking(move || this.call_blocking(&job, staged)).await;
            self.backing.stats.process_duration.observe(started.elapsed());
            let outputs = match outcome {
                Ok(Ok(outputs)) => outputs,
                Ok(Err(failure)) => return Err(failure),
                Err(join) => {
                    let message = match join.try_into_panic() {
                        Ok(payload) => panic_message(&*payload),
                        Err(join) => join.to_string(),
                    };
                    return Err(Failure::new(FailureKind::Panic, message));
                }
            };
            let written = staging.upload(&*self.backing.store).await.map_err(|e| Failure {
                transient: e.is_transient(),
                ..Failure::new(FailureKind::Storage, error_chain(&e))
            })?;
            Ok(Executed { outputs, written })
            // `staging` drops here (or on any early return): the files go.
        })
    }
}

impl<H: Handler> Execution<H> {
    fn call_blocking(&self, job: &Job, staging: Arc<Staging>) -> Result<Vec<(u64, CaseValue)>, Failure> {
        let mut connection =
            H::Connection::checkout(&self.pool).map_err(|e| Failure::outage(FailureKind::Database, e.to_string()))?;
        let b = &self.backing;
        let (sysmap, name, handle, store) = (b.sysmap.clone(), b.name, b.handle.clone(), b.store.clone());
        let stats = b.stats.clone();
        let read_file = move |key: &str, id: u64| -> Result<ObjectReader, ObjectError> {
            let bucket = resolve_bucket(&sysmap, name, key, &handle)?;
            let store = store.clone();
            let key = id.to_string();
            let reader = bridge::wait(&handle, async move { store.open(&bucket, &key).await }).map_err(|e| {
                ObjectError::Backend {
                    op: "read",
                    bucket: String::new(),
                    key: id.to_string(),
                    message: e.to_string(),
                }
            })??;
            Ok(ObjectReader::new(Counted {
                inner: reader,
                stats: stats.clone(),
            }))
        };
        let (sysmap, handle) = (b.sysmap.clone(), b.handle.clone());
        let write_file = move |key: &str, id: u64| -> Result<ObjectWriter, ObjectError> {
            let bucket = resolve_bucket(&sysmap, name, key, &handle)?;
            staging.create(&bucket, &id.to_string())
        };
        let context = RequestContext {
            service: name,
            request: job.request,
            attempt: job.attempt,
            redelivered: job.redelivered,
            trace_id: job.trace_id.clone(),
        };
        let parts = Parts {
            read_file: &read_file as &ReadFileFn,
            write_file: &write_file as &WriteFileFn,
            context: &context,
        };
        self.handler
            .call(job.request, &parts, &mut connection)
            .map_err(Failure::from_process)
    }
}

fn resolve_bucket(sysmap: &SysMap, service: &str, reference: &str, handle: &Handle) -> Result<String, ObjectError> {
    if let Some(hit) = sysmap.cached_bucket(service, reference) {
        return Ok(hit);
    }
    let (map, service_name, key) = (sysmap.clone(), service.to_string(), reference.to_string());
    let answer = bridge::wait(handle, async move { map.bucket(&service_name, &key).await });
    match answer {
        Ok(Ok(bucket)) => Ok(bucket),
        Ok(Err(e)) => Err(ObjectError::Bucket {
            reference: reference.into(),
            reason: e.to_string(),
        }),
        Err(e) => Err(ObjectError::Bucket {
            reference: reference.into(),
            reason: e.to_string(),
        }),
    }
}

/// Counts the bytes `process` reads, for `slingshot_s3_bytes_read_total`.
struct Counted {
    inner: ObjectReader,
    stats: Arc<crate::metrics::Stats>,
}

impl std::io::Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.stats
            .bytes_read
            .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(n)
    }
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("process panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("process panicked: {s}")
    } else {
        "process panicked".to_string()
    }
}
