//! Executing one request end to end: `process` on a blocking thread with a
//! pooled connection, its files staged and uploaded only after it succeeded.
//!
//! - [`contract`]: what `process` is given and may return, in types;
//! - [`service`]: a service's definition, registered by the macro;
//! - [`staging`] and [`writer`]: what `write_file` writes, until the upload;
//! - [`journal`]: which calls are in progress, for counting crashes;
//! - [`once`]: a once-mode stage's transaction, and its outbox;
//! - [`classify`]: what kind of failure `process` returned;
//! - [`bridge`]: waiting on async work from `process`'s blocking thread.

pub(crate) mod bridge;
pub(crate) mod classify;
pub(crate) mod contract;
pub(crate) mod journal;
pub(crate) mod once;
pub(crate) mod service;
pub(crate) mod staging;
pub(crate) mod typed;
pub(crate) mod writer;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use futures::future::BoxFuture;
use tokio::runtime::Handle;
use tracing::Instrument;

use self::contract::{Parts, ReadFileFn, RequestContext, WriteFileFn};
use self::once::{OnceExecutor, OnceJob, Stage};
use self::service::Handler;
use self::staging::{Staging, StagingRoot, WrittenObject};
use self::writer::ObjectWriter;
use crate::base::case::CaseValue;
use crate::base::chain::error_chain;
use crate::base::failure::{Failure, FailureKind};
use crate::db::{DbConnection, DbTarget};
use crate::error::Error;
use crate::storage::{ObjectError, ObjectReader, ObjectStore};
use crate::sysmap::SysMap;
use crate::telemetry::spans;

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
    pub stats: Arc<crate::base::stats::Stats>,
    /// Where `process` calls in progress are recorded (see [`crate::journal`]).
    pub(crate) journal: Option<Arc<crate::execute::journal::Journal>>,
    /// Whether the service runs in once mode: its inbox and outbox tables
    /// are created when it is prepared.
    pub once: bool,
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Backing")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

/// One request to execute.
#[derive(Debug, Clone)]
#[doc(hidden)]
pub struct Job {
    /// What `process` is told about the request.
    pub context: RequestContext,
    /// The delivery's fingerprint, recorded in the journal while `process`
    /// runs; 0 when it came from no delivery (`invoke`).
    pub fingerprint: u64,
    /// Once mode: the stage's inbox record and outbox rows.
    pub once: Option<OnceJob>,
}

/// A request `process` handled and whose files are uploaded.
#[derive(Debug, Clone, Default)]
pub struct Executed {
    /// The outputs `process` returned.
    pub outputs: Vec<(u64, CaseValue)>,
    /// The objects it wrote, now uploaded.
    pub written: Vec<WrittenObject>,
    /// How a once-mode stage ended.
    pub stage: Stage,
    /// The events `process` emitted (see [`RequestContext::emit`]), taken
    /// from its context once it returned.
    pub events: Vec<crate::execute::contract::Event>,
}

/// Runs requests of one service. Object-safe, so the runtime holds services
/// of any connection type side by side.
#[doc(hidden)]
pub trait Executor: Send + Sync {
    /// Processes one request: `process` on a blocking thread with a pooled
    /// connection, then uploads what it wrote. Nothing is uploaded if it fails.
    fn execute(self: Arc<Self>, job: Job) -> BoxFuture<'static, Result<Executed, Failure>>;
    /// The outbox of a once-mode service; `None` in plain mode.
    fn once(self: Arc<Self>) -> Option<Arc<dyn OnceExecutor>>;
}

struct Execution<H: Handler> {
    handler: H,
    pool: <H::Connection as DbConnection>::Pool,
    /// Once mode: the service's inbox and outbox.
    tables: Option<crate::db::once::Tables>,
    /// Once mode on SQLite: held by the stage that writes.
    sqlite_turn: Mutex<()>,
    backing: Backing,
    /// The process's own staging directory, removed when the service is.
    staging: Arc<StagingRoot>,
}

/// Builds the executor of handler `H` (referenced from the generated `ServiceDef`). Blocking: opens the pool.
#[doc(hidden)]
pub fn prepare<H: Handler + Default>(backing: Backing) -> Result<Arc<dyn Executor>, Error> {
    prepare_with(H::default(), backing)
}

/// [`prepare`] for a handler built at run time (a Python service's).
#[doc(hidden)]
pub fn prepare_with<H: Handler>(handler: H, backing: Backing) -> Result<Arc<dyn Executor>, Error> {
    spans::install_query_spans();
    let staging = claim_staging(&backing)?;
    let pool = H::Connection::open_pool(backing.database.as_ref(), backing.pool_size)?;
    let tables = if backing.once {
        if H::Connection::KIND == crate::db::ConnectionKind::None {
            return Err(Error::Config(format!(
                "service {} runs in once mode (`once = true` or SLINGSHOT_ONCE=true), but `process` takes no database \
                 connection: once mode keeps its inbox and outbox in the service's database",
                backing.name
            )));
        }
        let tables = once::migrate::<H::Connection>(&pool, backing.name)
            .map_err(|e| Error::Config(format!("service {} runs in once mode, but {e}", backing.name)))?;
        tracing::info!(service = backing.name, inbox = %tables.inbox, outbox = %tables.outbox, "once mode");
        Some(tables)
    } else {
        None
    };
    Ok(Arc::new(Execution {
        handler,
        pool,
        tables,
        sqlite_turn: Mutex::new(()),
        backing,
        staging,
    }))
}

/// Start-up clean-up of what processes that died left, then this process's
/// own staging directory: sweeps the staging directories nobody holds,
/// aborts the uploads they recorded as unfinished, and sweeps the store's
/// abandoned partial files. Blocking.
fn claim_staging(backing: &Backing) -> Result<Arc<StagingRoot>, Error> {
    let base = &backing.staging_dir;
    let (root, swept) = StagingRoot::claim(base).map_err(|e| {
        Error::Config(format!(
            "SLINGSHOT_STAGING_DIR={}: cannot create a staging directory in it: {e}",
            base.display()
        ))
    })?;
    for upload in &swept.uploads {
        let (store, pending) = (backing.store.clone(), upload.clone());
        let aborted = bridge::wait(&backing.handle, async move { store.abort_upload(&pending).await });
        match aborted {
            Ok(Ok(())) => tracing::info!(service = backing.name, bucket = %upload.bucket, key = %upload.key,
                upload_id = %upload.upload_id, "aborted a multipart upload a process that died left unfinished"),
            Ok(Err(e)) => tracing::warn!(service = backing.name, upload_id = %upload.upload_id, error = %e,
                "cannot abort a multipart upload a process that died left unfinished"),
            Err(e) => tracing::warn!(service = backing.name, error = %e, "cannot abort an unfinished multipart upload"),
        }
    }
    match backing.store.sweep_abandoned() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            service = backing.name,
            files = n,
            "swept partial files writers that died left in the store"
        ),
        Err(e) => {
            tracing::warn!(service = backing.name, error = %e, "cannot sweep the store's abandoned partial files")
        }
    }
    backing.store.journal_uploads_in(&root.journal());
    Ok(Arc::new(root))
}

impl<H: Handler> Executor for Execution<H> {
    fn execute(self: Arc<Self>, job: Job) -> BoxFuture<'static, Result<Executed, Failure>> {
        Box::pin(async move {
            let staging = Arc::new(Staging::new(self.staging.clone()));
            let this = self.clone();
            let staged = staging.clone();
            let started = std::time::Instant::now();
            // The user's function, under the request's span (spawn_blocking
            // does not carry spans over by itself).
            let call = spans::call(self.backing.name);
            if job.once.is_some() {
                let outcome = tokio::task::spawn_blocking(move || {
                    let Job {
                        context,
                        fingerprint,
                        once: Some(once),
                    } = &job
                    else {
                        unreachable!("checked above")
                    };
                    this.call_once(context, *fingerprint, once, staged, call)
                })
                .await;
                self.backing.stats.process_duration.observe(started.elapsed());
                let (outputs, written, stage) = match outcome {
                    Ok(done) => done?,
                    Err(join) => return Err(joined(join)),
                };
                return Ok(Executed {
                    outputs,
                    written,
                    stage,
                    events: Vec::new(),
                });
            }
            let outcome = tokio::task::spawn_blocking(move || this.call_blocking(&job, staged, call)).await;
            self.backing.stats.process_duration.observe(started.elapsed());
            let outputs = match outcome {
                Ok(Ok(outputs)) => outputs,
                Ok(Err(failure)) => return Err(failure),
                Err(join) => return Err(joined(join)),
            };
            let written = staging.upload(&*self.backing.store).await.map_err(|e| Failure {
                transient: e.is_transient(),
                ..Failure::new(FailureKind::Storage, error_chain(&e))
            })?;
            Ok(Executed {
                outputs,
                written,
                stage: Stage::Plain,
                events: Vec::new(),
            })
            // `staging` drops here (or on any early return): the files go.
        })
    }

    fn once(self: Arc<Self>) -> Option<Arc<dyn OnceExecutor>> {
        match self.tables {
            Some(_) => Some(self),
            None => None,
        }
    }
}

/// The failure of a `process` call whose blocking task did not return.
fn joined(join: tokio::task::JoinError) -> Failure {
    let message = match join.try_into_panic() {
        Ok(payload) => panic_message(&*payload),
        Err(join) => join.to_string(),
    };
    Failure::new(FailureKind::Panic, message)
}

impl<H: Handler> Execution<H> {
    /// A tested connection of the pool. Blocking.
    fn checkout(&self) -> Result<<H::Connection as DbConnection>::Guard, Failure> {
        H::Connection::checkout(&self.pool).map_err(|e| Failure {
            transient: e.is_outage(),
            ..Failure::new(FailureKind::Database, e.to_string())
        })
    }

    fn call_blocking(
        &self,
        job: &Job,
        staging: Arc<Staging>,
        call: tracing::Span,
    ) -> Result<Vec<(u64, CaseValue)>, Failure> {
        let mut connection = self.checkout()?;
        self.call_process(&job.context, job.fingerprint, staging, call, &mut connection)
    }

    /// Calls `process` with readers, staged writers and `connection`,
    /// recorded in the journal while it runs.
    fn call_process(
        &self,
        context: &RequestContext,
        fingerprint: u64,
        staging: Arc<Staging>,
        call: tracing::Span,
        connection: &mut H::Connection,
    ) -> Result<Vec<(u64, CaseValue)>, Failure> {
        let b = &self.backing;
        let (sysmap, name, handle, store) = (b.sysmap.clone(), b.name, b.handle.clone(), b.store.clone());
        let stats = b.stats.clone();
        // Every reader stops working when the request ends (below, however
        // `process` ends), and its download stops.
        let readers = Arc::new(Readers::default());
        let _end_readers = EndReaders(readers.clone());
        let read_file: Arc<ReadFileFn> = Arc::new(move |key: &str, id: u64| -> Result<ObjectReader, ObjectError> {
            let bucket = resolve_bucket(&sysmap, name, key, &handle)?;
            if readers.ended.load(Ordering::SeqCst) {
                return Err(ObjectError::RequestEnded {
                    bucket,
                    key: id.to_string(),
                });
            }
            let (store, object) = (store.clone(), bucket.clone());
            let key = id.to_string();
            let span = spans::object("GetObject", &bucket, &key);
            let opened = bridge::wait(
                &handle,
                async move { store.open(&object, &key).await }.instrument(span.clone()),
            )
            .map_err(|e| ObjectError::Backend {
                op: "read",
                bucket: bucket.clone(),
                key: id.to_string(),
                message: e.to_string(),
            })
            .and_then(|opened| opened);
            if let Err(e) = &opened {
                spans::failed(&span, &e.to_string());
            }
            let reader = opened?;
            Ok(readers.scoped(reader, bucket, id.to_string(), stats.clone()))
        });
        let (sysmap, handle) = (b.sysmap.clone(), b.handle.clone());
        let write_file: Arc<WriteFileFn> = Arc::new(move |key: &str, id: u64| -> Result<ObjectWriter, ObjectError> {
            let bucket = resolve_bucket(&sysmap, name, key, &handle)?;
            staging.create(&bucket, &id.to_string())
        });
        let parts = Parts {
            read_file: &read_file,
            write_file: &write_file,
            context,
        };
        // Recorded until `process` returns or unwinds: a process that dies
        // meanwhile leaves it in the journal.
        let _in_progress = match (&self.backing.journal, fingerprint) {
            (Some(journal), fingerprint) if fingerprint != 0 => Some(journal.enter(fingerprint)),
            _ => None,
        };
        call.in_scope(|| {
            let result = self.handler.call(context.request, &parts, connection);
            if let Err(e) = &result {
                spans::failed(&call, &e.to_string());
            }
            result.map_err(classify::from_process)
        })
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
        // Unreachable or failing, the sys-map is an outage: the request is
        // retried until it is back, not dead-lettered.
        Ok(Err(e)) => Err(ObjectError::Bucket {
            reference: reference.into(),
            reason: e.to_string(),
            unavailable: e.is_outage(),
        }),
        // The runtime is shutting down: the request goes back to its queue.
        Err(e) => Err(ObjectError::Bucket {
            reference: reference.into(),
            reason: e.to_string(),
            unavailable: true,
        }),
    }
}

/// The readers one request opened. When the request ends they stop
/// working: each is dropped (stopping its download) unless a read is in
/// progress on another thread, and any later read fails.
#[derive(Default)]
struct Readers {
    ended: Arc<AtomicBool>,
    open: Mutex<Vec<Weak<Mutex<Option<ObjectReader>>>>>,
}

impl Readers {
    /// `reader`, counted for `slingshot_s3_bytes_read_total` and valid while
    /// the request runs.
    fn scoped(
        &self,
        reader: ObjectReader,
        bucket: String,
        key: String,
        stats: Arc<crate::base::stats::Stats>,
    ) -> ObjectReader {
        let inner = Arc::new(Mutex::new(Some(reader)));
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        open.retain(|r| r.strong_count() > 0);
        open.push(Arc::downgrade(&inner));
        ObjectReader::new(Scoped {
            inner,
            ended: self.ended.clone(),
            bucket: bucket.clone(),
            key: key.clone(),
            stats,
        })
        .with_location(bucket, key)
    }

    fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
        for reader in self.open.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            if let Some(reader) = reader.upgrade() {
                // A read in progress finishes first; the reader goes at its next read.
                if let Ok(mut reader) = reader.try_lock() {
                    reader.take();
                }
            }
        }
    }
}

/// Ends the request's readers when dropped: when `process` returned, failed
/// or panicked.
struct EndReaders(Arc<Readers>);

impl Drop for EndReaders {
    fn drop(&mut self) {
        self.0.end();
    }
}

/// A reader of one request: counts the bytes `process` reads and fails once
/// the request has ended.
struct Scoped {
    inner: Arc<Mutex<Option<ObjectReader>>>,
    ended: Arc<AtomicBool>,
    bucket: String,
    key: String,
    stats: Arc<crate::base::stats::Stats>,
}

impl Scoped {
    /// `f` on the reader, unless the request ended; what it read is counted.
    fn with(&mut self, f: impl FnOnce(&mut ObjectReader) -> std::io::Result<usize>) -> std::io::Result<usize> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if self.ended.load(Ordering::SeqCst) {
            inner.take();
        }
        let Some(reader) = inner.as_mut() else {
            return Err(ObjectError::RequestEnded {
                bucket: self.bucket.clone(),
                key: self.key.clone(),
            }
            .into_io_error());
        };
        let n = f(reader)?;
        self.stats.bytes_read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

impl std::io::Read for Scoped {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.with(|reader| reader.read(buf))
    }

    /// The store's `read_to_end` (see `ObjectReader`'s).
    fn read_to_end(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        self.with(|reader| reader.read_to_end(buf))
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
