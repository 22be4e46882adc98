//! A once-mode stage: `process`, its uploads, the inbox record and the outbox rows in one database transaction, under the key's lock; and the outbox work the relay asks for.
//!
//! The order inside the transaction, on `process`'s own connection:
//!
//! 1. `BEGIN` (SQLite: `BEGIN IMMEDIATE`), then the serialization key's
//!    advisory lock (PostgreSQL), held until the transaction ends;
//! 2. the inbox row: if the message is there already it is done, and the
//!    stage ends as a duplicate without running `process`;
//! 3. `process`, whose writes join the transaction (its own `transaction`
//!    calls become savepoints);
//! 4. the uploads of what it wrote (object keys are request IDs, so an
//!    upload again after a crash writes the same object);
//! 5. the outbox rows for its outputs, then `COMMIT`.
//!
//! Anything failing before the commit rolls all of it back; a process that
//! dies leaves the transaction to the database, which rolls it back when the
//! connection closes. The worker publishes the committed rows and deletes
//! them ([`OnceExecutor::sent`]); the relay takes what is left.

use std::sync::Arc;

use futures::future::BoxFuture;

use super::contract::RequestContext;
use super::staging::{Staging, WrittenObject};
use super::{bridge, Execution, Handler};
use crate::base::case::CaseValue;
use crate::base::chain::error_chain;
use crate::base::failure::{Failure, FailureKind};
use crate::base::fault;
pub(crate) use crate::db::once::{now_ms, Depth, NewOutboxRow, OutboxRow, BATCH};
use crate::db::once::{Dialect, OnceConn, Tables};
use crate::db::{is_connection_failure, DbConnection};

/// The outbox rows a call's outputs become.
pub(crate) type Plan = Arc<dyn Fn(&[(u64, CaseValue)]) -> Vec<NewOutboxRow> + Send + Sync>;

/// What a stage did: its outputs, the objects it uploaded, how it ended.
pub(super) type Staged = (Vec<(u64, CaseValue)>, Vec<WrittenObject>, Stage);

/// What a once-mode request needs besides its context.
#[derive(Clone)]
pub struct OnceJob {
    /// The inbound message's identity, recorded in the inbox.
    pub message_id: String,
    /// The serialization key: no two stages of one key run at once.
    pub key: String,
    /// The outbox rows a call's outputs become (the routes, with each
    /// message's deterministic ID).
    pub plan: Plan,
    /// The W3C `traceparent` the outputs continue.
    pub traceparent: Option<String>,
    /// The legacy trace ID the outputs carry, if they carry one.
    pub legacy_trace: Option<String>,
}

impl std::fmt::Debug for OnceJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OnceJob")
            .field("message_id", &self.message_id)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

/// How a once-mode stage ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Stage {
    /// Not in once mode: the worker routes the outputs itself.
    #[default]
    Plain,
    /// Committed: these outbox rows are to be published, then deleted.
    Committed(Vec<OutboxRow>),
    /// The message was done already; `process` did not run. `pending` when
    /// its stage left outbox rows the relay has yet to publish.
    Duplicate {
        /// Whether the earlier stage's outputs are still in the outbox.
        pending: bool,
    },
}

/// Publishes outbox rows; returns the `seq` of each row the broker confirmed.
pub(crate) type Publish = Arc<dyn Fn(Vec<OutboxRow>) -> BoxFuture<'static, Vec<i64>> + Send + Sync>;

/// The outbox work of a once-mode service, on its database.
pub trait OnceExecutor: Send + Sync {
    /// Deletes outbox rows the broker confirmed.
    fn sent(self: Arc<Self>, seqs: Vec<i64>) -> BoxFuture<'static, Result<(), Failure>>;
    /// Publishes one batch of the rows written before `before_ms` (each at
    /// most by one instance at a time), deleting those confirmed; how many.
    fn relay(self: Arc<Self>, before_ms: i64, publish: Publish) -> BoxFuture<'static, Result<usize, Failure>>;
    /// Forgets inbox rows finished before `before_ms`, batch by batch; how many.
    fn expire(self: Arc<Self>, before_ms: i64) -> BoxFuture<'static, Result<usize, Failure>>;
    /// The outbox's depth.
    fn depth(self: Arc<Self>) -> BoxFuture<'static, Result<Depth, Failure>>;
    /// Checks that both tables are there and writable (a probe row, rolled
    /// back); names them.
    fn verify(self: Arc<Self>) -> BoxFuture<'static, Result<String, Failure>>;
}

/// A database failure of the once-mode statements: an outage if the
/// connection failed, else a failure of the request.
fn db_failure(what: &str, e: &diesel::result::Error) -> Failure {
    Failure {
        transient: is_connection_failure(e),
        ..Failure::new(FailureKind::Database, format!("once mode: {what}: {e}"))
    }
}

fn not_supported<C>() -> Failure {
    Failure::new(
        FailureKind::Database,
        format!(
            "once mode needs a diesel PostgreSQL or SQLite connection; `{}` cannot run the inbox and outbox statements",
            std::any::type_name::<C>()
        ),
    )
}

/// The statements of `connection`, or why it has none.
fn once_of<C: DbConnection>(connection: &mut C) -> Result<OnceConn<'_>, Failure> {
    C::once(connection).ok_or_else(not_supported::<C>)
}

/// Creates the tables of `service` on a connection of `pool`. Blocking.
pub(super) fn migrate<C: DbConnection>(pool: &C::Pool, service: &str) -> Result<Tables, String> {
    let tables = Tables::of(service);
    let mut connection = C::checkout(pool).map_err(|e| e.to_string())?;
    let mut once = once_of(&mut *connection).map_err(|f| f.message)?;
    once.migrate(&tables).map_err(|e| {
        format!(
            "cannot create the inbox and outbox tables {} and {}: {e}",
            tables.inbox, tables.outbox
        )
    })?;
    Ok(tables)
}

/// A transaction `process`'s connection is in, rolled back when dropped
/// unless committed: also when `process` panics.
struct Transaction<'a, C: DbConnection> {
    connection: &'a mut C,
    open: bool,
}

impl<C: DbConnection> Transaction<'_, C> {
    fn once(&mut self) -> Result<OnceConn<'_>, Failure> {
        once_of(self.connection)
    }

    fn commit(mut self) -> Result<(), Failure> {
        let committed = self.once()?.commit();
        // A failed COMMIT ends the transaction too (diesel rolls it back).
        self.open = false;
        committed.map_err(|e| db_failure("commit", &e))
    }
}

impl<C: DbConnection> Drop for Transaction<'_, C> {
    fn drop(&mut self) {
        if self.open {
            if let Some(Err(e)) = C::once(self.connection).map(|mut once| once.rollback()) {
                tracing::warn!(error = %e, "once mode: cannot roll back the stage's transaction");
            }
        }
    }
}

impl<H: Handler> Execution<H> {
    /// Runs a once-mode stage on a blocking thread; see the module's docs.
    pub(super) fn call_once(
        &self,
        context: &RequestContext,
        fingerprint: u64,
        job: &OnceJob,
        staging: Arc<Staging>,
        call: tracing::Span,
    ) -> Result<Staged, Failure> {
        let tables = self.tables.as_ref().ok_or_else(not_supported::<H::Connection>)?;
        let mut connection = self.checkout()?;
        // SQLite has one writer at a time: the stages of this service take
        // turns here rather than in SQLite's busy wait, which gives up
        // after its timeout however long the queue of writers is.
        let _turn = match once_of(&mut *connection)?.dialect() {
            Dialect::Sqlite => Some(
                self.sqlite_turn
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            ),
            Dialect::Postgres => None,
        };
        let mut tx = Transaction {
            connection: &mut *connection,
            open: false,
        };
        tx.once()?.begin().map_err(|e| db_failure("begin", &e))?;
        tx.open = true;
        let key = crate::db::once::lock_key(self.backing.name, &job.key);
        let claimed = tx
            .once()?
            .claim(tables, key, &job.message_id, context.request, now_ms())
            .map_err(|e| db_failure("lock the key and record the message in the inbox", &e))?;
        if !claimed {
            let pending = tx
                .once()?
                .has_pending(tables, &job.message_id)
                .map_err(|e| db_failure("read the outbox", &e))?;
            return Ok((Vec::new(), Vec::new(), Stage::Duplicate { pending }));
        }
        let outputs = self.call_process(context, fingerprint, staging.clone(), call, tx.connection)?;
        let (store, staged) = (self.backing.store.clone(), staging);
        let written = bridge::wait(&self.backing.handle, async move { staged.upload(&*store).await })
            .map_err(|e| Failure {
                transient: true,
                ..Failure::new(FailureKind::Storage, e.to_string())
            })?
            .map_err(|e| Failure {
                transient: e.is_transient(),
                ..Failure::new(FailureKind::Storage, error_chain(&e))
            })?;
        fault::point("once-after-upload");
        let rows = (job.plan)(&outputs);
        let trace = (job.traceparent.as_deref(), job.legacy_trace.as_deref());
        let recorded = tx
            .once()?
            .record(tables, &job.message_id, &rows, trace, now_ms())
            .map_err(|e| db_failure("write the outbox", &e))?;
        tx.commit()?;
        fault::point("once-after-commit");
        Ok((outputs, written, Stage::Committed(recorded)))
    }

    /// Runs `f` with a connection's statements on a blocking thread.
    fn with_once<T: Send + 'static>(
        self: Arc<Self>,
        f: impl FnOnce(&mut OnceConn<'_>, &Tables) -> Result<T, Failure> + Send + 'static,
    ) -> BoxFuture<'static, Result<T, Failure>> {
        Box::pin(async move {
            tokio::task::spawn_blocking(move || {
                let tables = self.tables.as_ref().ok_or_else(not_supported::<H::Connection>)?;
                let mut connection = self.checkout()?;
                let mut once = once_of(&mut *connection)?;
                f(&mut once, tables)
            })
            .await
            .map_err(|e| Failure::new(FailureKind::Database, format!("once mode: {e}")))?
        })
    }
}

impl<H: Handler> OnceExecutor for Execution<H> {
    fn sent(self: Arc<Self>, seqs: Vec<i64>) -> BoxFuture<'static, Result<(), Failure>> {
        self.with_once(move |once, tables| {
            once.transaction(|once| once.delete(tables, &seqs))
                .map(drop)
                .map_err(|e| db_failure("delete published outbox rows", &e))
        })
    }

    fn relay(self: Arc<Self>, before_ms: i64, publish: Publish) -> BoxFuture<'static, Result<usize, Failure>> {
        let handle = self.backing.handle.clone();
        self.with_once(move |once, tables| {
            // One transaction a batch. PostgreSQL: the rows stay locked while
            // they are published, and another instance's relay skips them.
            // SQLite: the file's write lock is held (one process anyway).
            once.begin().map_err(|e| db_failure("begin", &e))?;
            let relayed = (|| {
                let rows = once
                    .pending(tables, before_ms, BATCH, true)
                    .map_err(|e| db_failure("read the outbox", &e))?;
                if rows.is_empty() {
                    return Ok(0);
                }
                let confirmed = bridge::wait(&handle, publish(rows)).map_err(|e| Failure {
                    transient: true,
                    ..Failure::new(FailureKind::Broker, e.to_string())
                })?;
                once.delete(tables, &confirmed)
                    .map_err(|e| db_failure("delete published outbox rows", &e))?;
                Ok(confirmed.len())
            })();
            let ended = match relayed {
                Ok(_) => once.commit(),
                Err(_) => once.rollback(),
            };
            ended.map_err(|e| db_failure("end the relay's transaction", &e))?;
            relayed
        })
    }

    fn expire(self: Arc<Self>, before_ms: i64) -> BoxFuture<'static, Result<usize, Failure>> {
        self.with_once(move |once, tables| {
            let mut expired = 0;
            loop {
                let n = once
                    .transaction(|once| once.expire(tables, before_ms))
                    .map_err(|e| db_failure("expire inbox rows", &e))?;
                expired += n;
                if n < BATCH as usize {
                    return Ok(expired);
                }
            }
        })
    }

    fn depth(self: Arc<Self>) -> BoxFuture<'static, Result<Depth, Failure>> {
        self.with_once(|once, tables| once.depth(tables).map_err(|e| db_failure("read the outbox", &e)))
    }

    fn verify(self: Arc<Self>) -> BoxFuture<'static, Result<String, Failure>> {
        self.with_once(|once, tables| {
            once.verify(tables)
                .map_err(|e| db_failure("write and read the inbox and outbox", &e))?;
            let depth = once.depth(tables).map_err(|e| db_failure("read the outbox", &e))?;
            Ok(format!(
                "{} and {} ({} outbox rows)",
                tables.inbox, tables.outbox, depth.rows
            ))
        })
    }
}
