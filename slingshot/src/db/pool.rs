//! The per-service connection pool: r2d2 with connections tested at checkout,
//! a checkout bounded in time even when the server froze, and SQLite's
//! pragmas.

use std::ops::{Deref, DerefMut};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::r2d2::{ConnectionManager, CustomizeConnection, ManageConnection, Pool, PooledConnection, R2D2Connection};

use super::{create_sqlite_dir, DbError, DbTarget};

/// Every SQLite connection, pooled or not: connections wait for each other
/// instead of failing with "database is locked", readers do not block the
/// writer, and foreign keys are enforced as PostgreSQL enforces them.
pub const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;";

/// Applies [`SQLITE_PRAGMAS`] to each pooled connection.
#[derive(Debug)]
struct SqliteSetup;

impl<C: R2D2Connection + Send + 'static> CustomizeConnection<Slot<C>, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, slot: &mut Slot<C>) -> Result<(), diesel::r2d2::Error> {
        slot.connection
            .batch_execute(SQLITE_PRAGMAS)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

/// A pooled connection and whether its last test failed.
#[derive(Debug)]
struct Slot<C> {
    connection: C,
    broken: bool,
}

/// diesel's connection manager, with connections the checkout tests itself
/// (see [`checkout_tested`]) and discards when a test failed.
#[derive(Debug)]
struct Manager<C: R2D2Connection + Send + 'static>(ConnectionManager<C>);

impl<C: R2D2Connection + Send + 'static> ManageConnection for Manager<C> {
    type Connection = Slot<C>;
    type Error = diesel::r2d2::Error;

    fn connect(&self) -> Result<Slot<C>, Self::Error> {
        self.0.connect().map(|connection| Slot {
            connection,
            broken: false,
        })
    }

    fn is_valid(&self, slot: &mut Slot<C>) -> Result<(), Self::Error> {
        self.0.is_valid(&mut slot.connection)
    }

    fn has_broken(&self, slot: &mut Slot<C>) -> bool {
        slot.broken || self.0.has_broken(&mut slot.connection)
    }
}

/// The pool of a service whose `process` takes a `C`.
#[doc(hidden)]
pub struct ConnectionPool<C: R2D2Connection + Send + 'static> {
    pool: Pool<Manager<C>>,
    /// The target without credentials, for messages.
    target: String,
    checkout_timeout: Duration,
    /// Whether pings go over the network (and so run on a thread of their own).
    remote: bool,
}

impl<C: R2D2Connection + Send + 'static> std::fmt::Debug for ConnectionPool<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionPool")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

/// A tested connection checked out of a [`ConnectionPool`]; it goes back
/// when dropped.
#[doc(hidden)]
pub struct Pooled<C: R2D2Connection + Send + 'static>(PooledConnection<Manager<C>>);

impl<C: R2D2Connection + Send + 'static> std::fmt::Debug for Pooled<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pooled")
    }
}

impl<C: R2D2Connection + Send + 'static> Deref for Pooled<C> {
    type Target = C;
    fn deref(&self) -> &C {
        &self.0.connection
    }
}

impl<C: R2D2Connection + Send + 'static> DerefMut for Pooled<C> {
    fn deref_mut(&mut self) -> &mut C {
        &mut self.0.connection
    }
}

pub(super) fn open_r2d2<C>(target: &DbTarget, size: u32) -> Result<ConnectionPool<C>, DbError>
where
    C: R2D2Connection + Send + 'static,
{
    create_sqlite_dir(target)?;
    let checkout_timeout = target.checkout_timeout();
    // The checkout tests connections itself (bounded); r2d2's own test on
    // check-out would wait for a frozen server for ever.
    let mut builder = Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(1))
        .connection_timeout(checkout_timeout)
        .test_on_check_out(false);
    if matches!(target, DbTarget::Sqlite(_)) {
        builder = builder.connection_customizer(Box::new(SqliteSetup));
    }
    let pool = builder
        .build(Manager(ConnectionManager::<C>::new(target.url())))
        .map_err(|e| DbError::Connect {
            target: target.display(),
            message: e.to_string(),
        })?;
    Ok(ConnectionPool {
        pool,
        target: target.display(),
        checkout_timeout,
        remote: target.is_remote(),
    })
}

/// Checks a connection out of `pool` and pings it, within the pool's
/// checkout timeout. A connection whose ping fails is discarded and another
/// (or a new one) tried; past the timeout the database counts as
/// unavailable ([`DbError::Connect`], an outage). A remote ping runs on a
/// thread of its own: a late one keeps its connection there until the
/// server answers (see the module's documentation).
pub(super) fn checkout_tested<C>(pool: &ConnectionPool<C>) -> Result<Pooled<C>, DbError>
where
    C: R2D2Connection + Send + 'static,
{
    let started = Instant::now();
    let deadline = started + pool.checkout_timeout;
    let unavailable = |message: String| DbError::Connect {
        target: pool.target.clone(),
        message,
    };
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let connection = pool.pool.get_timeout(left).map_err(|e| {
            unavailable(format!(
                "no pooled connection within {:.1} s (SLINGSHOT_DB_CHECKOUT_TIMEOUT_SECS): {e}",
                pool.checkout_timeout.as_secs_f64()
            ))
        })?;
        let tested = if pool.remote {
            let left = deadline.saturating_duration_since(Instant::now());
            within(left, move || ping(connection)).map_err(|late| {
                unavailable(match late {
                    Late::Elapsed => format!(
                        "a pooled connection did not answer its ping within {:.1} s of the checkout \
                         (SLINGSHOT_DB_CHECKOUT_TIMEOUT_SECS)",
                        started.elapsed().as_secs_f64()
                    ),
                    other => format!("testing a pooled connection: {other}"),
                })
            })?
        } else {
            ping(connection)
        };
        if let Some(connection) = tested {
            return Ok(Pooled(connection));
        }
    }
}

/// The connection if it answers a ping; a connection that does not is
/// marked broken and dropped, so the pool discards it.
fn ping<C>(mut connection: PooledConnection<Manager<C>>) -> Option<PooledConnection<Manager<C>>>
where
    C: R2D2Connection + Send + 'static,
{
    match connection.connection.ping() {
        Ok(()) => Some(connection),
        Err(_) => {
            connection.broken = true;
            None
        }
    }
}

/// Runs `work` on a thread of its own and waits at most `timeout` for its
/// result. When the wait ends first, `work` carries on and its result is
/// dropped on that thread once it is done (a connection it holds goes back
/// to its pool then). Threads are reused: starting one for every checkout
/// would cost several times what handing work to an idle one does.
#[doc(hidden)]
pub fn within<T: Send + 'static>(timeout: Duration, work: impl FnOnce() -> T + Send + 'static) -> Result<T, Late> {
    let (tx, rx) = mpsc::sync_channel(1);
    run_detached(Box::new(move || {
        // The waiter may have given up: the result is dropped here then.
        let _ = tx.send(work());
    }))
    .map_err(Late::NoThread)?;
    rx.recv_timeout(timeout).map_err(|e| match e {
        mpsc::RecvTimeoutError::Timeout => Late::Elapsed,
        mpsc::RecvTimeoutError::Disconnected => Late::Panicked,
    })
}

/// Work for a [`within`] thread.
type Job = Box<dyn FnOnce() + Send>;

/// Threads of [`within`] waiting for work, each by the sender of its queue.
/// A thread stuck in its work (a ping to a frozen server) is not here, so a
/// stuck thread never delays other work; a new thread is started when none
/// is idle.
static IDLE: std::sync::Mutex<Vec<mpsc::Sender<Job>>> = std::sync::Mutex::new(Vec::new());

/// Idle threads kept for later work; one that finds this many idle ends.
const MAX_IDLE: usize = 64;

/// Hands `job` to an idle thread, or to a new one.
fn run_detached(mut job: Job) -> std::io::Result<()> {
    let idle = || IDLE.lock().unwrap_or_else(|e| e.into_inner()).pop();
    while let Some(worker) = idle() {
        match worker.send(job) {
            Ok(()) => return Ok(()),
            // Its thread is gone (it panicked): try the next one.
            Err(mpsc::SendError(back)) => job = back,
        }
    }
    let (me, jobs) = mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("slingshot-db-wait".into())
        .spawn(move || {
            let mut next = Some(job);
            while let Some(job) = next.take() {
                job();
                {
                    let mut idle = IDLE.lock().unwrap_or_else(|e| e.into_inner());
                    if idle.len() >= MAX_IDLE {
                        return;
                    }
                    idle.push(me.clone());
                }
                // This thread holds a sender of its own queue: it waits
                // here until it is handed more work.
                next = jobs.recv().ok();
            }
        })
        .map(drop)
}

/// Why [`within`] has no result.
#[doc(hidden)]
#[derive(Debug, thiserror::Error)]
pub enum Late {
    /// The timeout passed first.
    #[error("it did not finish in time")]
    Elapsed,
    /// The work panicked.
    #[error("it panicked")]
    Panicked,
    /// No thread could be started for it.
    #[error("no thread could be started for it: {0}")]
    NoThread(std::io::Error),
}
