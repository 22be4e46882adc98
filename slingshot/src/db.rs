//! The database seam: which connection types `process` may take, and the per-service pool they are checked out of.
//!
//! The connection type a function declares decides the database:
//! `PgConnection` is always PostgreSQL (the sys-map's `db` endpoint),
//! `SqliteConnection` always SQLite (the file the sys-map's backends name),
//! and [`AnyConnection`] follows the sys-map, so one function runs on SQLite
//! locally and PostgreSQL in production. Connections come from an r2d2 pool
//! sized to the service's concurrency; each is tested (pinged) when checked
//! out, so a broken one is replaced rather than handed to `process`.
//!
//! Every wait here is bounded. A checkout, the ping included, takes at most
//! the target's checkout timeout (`SLINGSHOT_DB_CHECKOUT_TIMEOUT_SECS`): a
//! PostgreSQL ping runs on a thread of its own, because nothing in libpq
//! bounds waiting for an answer from a server that accepts TCP but does not
//! answer (a frozen process: its kernel still acknowledges, so neither TCP
//! keepalives nor `tcp_user_timeout` fire). A connection whose ping is late
//! stays with that thread until the server answers or the connection fails,
//! and counts against the pool's size meanwhile, so at most the pool's size
//! of them exist. Opening a connection is bounded by libpq's
//! `connect_timeout`; a query inside `process` is bounded only by the
//! server's `statement_timeout` and, on a dead network, by the TCP timeouts
//! (the runtime puts all three in the URL).
//!
//! What failed decides how a request is retried: a connection that could not
//! be had or was lost is an outage ([`DbError::is_outage`],
//! [`is_connection_failure`]); any error of a query is a failure of the
//! request.

use std::ops::{Deref, DerefMut};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use diesel::r2d2::{ConnectionManager, CustomizeConnection, ManageConnection, Pool, PooledConnection, R2D2Connection};

/// A database failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// No connection could be opened or checked out.
    #[error("cannot connect to {target}: {message}")]
    Connect {
        /// The database, without credentials.
        target: String,
        /// Why.
        message: String,
    },
    /// The function's connection type does not fit the configured database.
    #[error("{0}")]
    Mismatch(String),
}

impl DbError {
    /// Whether the database, not the request, failed: no connection could be
    /// opened, checked out or tested in time. Such a request is retried as
    /// an outage.
    pub fn is_outage(&self) -> bool {
        matches!(self, DbError::Connect { .. })
    }
}

/// Whether `error`, returned by a query, means the connection failed (the
/// server closed it or went away, a command could not be sent, the
/// transaction state was lost with it) rather than the query: an outage,
/// retried until the database is back, not a failure of the request.
///
/// It goes by diesel's error kind alone, which diesel sets from the
/// connection's state (libpq's `CONNECTION_BAD`) and the SQLSTATE, never by
/// the message: a query's error is the request's failure whatever its text
/// says, be it a syntax error, a missing table, a violated constraint, an
/// exception a trigger raised, or a statement cancelled by
/// `statement_timeout`.
///
/// ```
/// use diesel::result::{DatabaseErrorKind, Error};
/// let lost = Error::DatabaseError(DatabaseErrorKind::ClosedConnection, Box::new("server closed the connection".to_string()));
/// assert!(slingshot::db::is_connection_failure(&lost));
/// let bad = Error::DatabaseError(DatabaseErrorKind::Unknown, Box::new("could not connect to the ledger".to_string()));
/// assert!(!slingshot::db::is_connection_failure(&bad));
/// ```
pub fn is_connection_failure(error: &diesel::result::Error) -> bool {
    use diesel::result::{DatabaseErrorKind, Error};
    matches!(
        error,
        Error::DatabaseError(
            DatabaseErrorKind::ClosedConnection | DatabaseErrorKind::UnableToSendCommand,
            _
        ) | Error::BrokenTransactionManager
    )
}

/// How long a SQLite checkout may wait: only for another request of the same
/// service to give a connection back, which a pool sized to the concurrency
/// rules out; nothing there waits on the network.
const SQLITE_CHECKOUT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a pool connects.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// PostgreSQL.
    Postgres {
        /// A libpq connection URL, credentials and connection parameters
        /// (timeouts) included.
        url: String,
        /// The server and database without credentials, for messages.
        display: String,
        /// How long a request may wait for a tested connection.
        checkout_timeout: Duration,
    },
}

impl std::fmt::Debug for DbTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.display())
    }
}

impl DbTarget {
    /// The target without credentials.
    pub fn display(&self) -> String {
        match self {
            DbTarget::Sqlite(path) => format!("sqlite {}", path.display()),
            DbTarget::Postgres { display, .. } => display.clone(),
        }
    }

    /// The connection URL, credentials included: a libpq URL or a SQLite path.
    #[doc(hidden)]
    pub fn url(&self) -> String {
        match self {
            DbTarget::Sqlite(path) => path.display().to_string(),
            DbTarget::Postgres { url, .. } => url.clone(),
        }
    }

    /// How long a request may wait for a tested connection of the pool.
    pub fn checkout_timeout(&self) -> Duration {
        match self {
            DbTarget::Sqlite(_) => SQLITE_CHECKOUT_TIMEOUT,
            DbTarget::Postgres { checkout_timeout, .. } => *checkout_timeout,
        }
    }

    /// Whether the database is reached over the network (and may stop
    /// answering), rather than being a local file.
    #[doc(hidden)]
    pub fn is_remote(&self) -> bool {
        matches!(self, DbTarget::Postgres { .. })
    }
}

/// Which database a connection type needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionKind {
    /// `process` takes no connection.
    None,
    /// PostgreSQL only.
    Postgres,
    /// SQLite only.
    Sqlite,
    /// Whatever the sys-map configures.
    Any,
}

pub use any::AnyConnection;

mod any {
    // The derive generates undocumented helper items.
    #![allow(missing_docs)]

    /// A connection to PostgreSQL or SQLite, whichever the sys-map configures.
    /// Queries written against it must be valid on both.
    #[derive(diesel::MultiConnection)]
    pub enum AnyConnection {
        /// PostgreSQL.
        Postgresql(diesel::PgConnection),
        /// SQLite.
        Sqlite(diesel::SqliteConnection),
    }

    impl std::fmt::Debug for AnyConnection {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(match self {
                AnyConnection::Postgresql(_) => "AnyConnection::Postgresql",
                AnyConnection::Sqlite(_) => "AnyConnection::Sqlite",
            })
        }
    }
}

/// A connection type `process` may take as `&mut`.
#[diagnostic::on_unimplemented(
    message = "`process` cannot take `&mut {Self}`",
    label = "not a database connection slingshot provides",
    note = "the database connection is `&mut diesel::PgConnection`, `&mut diesel::SqliteConnection` or `&mut slingshot::AnyConnection`"
)]
pub trait DbConnection: Send + Sized + 'static {
    /// Which database the type needs.
    const KIND: ConnectionKind;
    #[doc(hidden)]
    type Pool: Send + Sync + 'static;
    #[doc(hidden)]
    type Guard: DerefMut<Target = Self> + Send;
    /// Opens a pool of `size` connections. Blocking.
    #[doc(hidden)]
    fn open_pool(target: Option<&DbTarget>, size: u32) -> Result<Self::Pool, DbError>;
    /// Checks a tested connection out of the pool. Blocking.
    #[doc(hidden)]
    fn checkout(pool: &Self::Pool) -> Result<Self::Guard, DbError>;
}

/// The "connection" of a `process` that takes none.
#[doc(hidden)]
#[derive(Debug, Default)]
pub struct NoConnection;

impl DbConnection for NoConnection {
    const KIND: ConnectionKind = ConnectionKind::None;
    type Pool = ();
    type Guard = Box<NoConnection>;
    fn open_pool(_: Option<&DbTarget>, _: u32) -> Result<(), DbError> {
        Ok(())
    }
    fn checkout(_: &()) -> Result<Box<NoConnection>, DbError> {
        Ok(Box::new(NoConnection))
    }
}

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

fn open_r2d2<C>(target: &DbTarget, size: u32) -> Result<ConnectionPool<C>, DbError>
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
fn checkout_tested<C>(pool: &ConnectionPool<C>) -> Result<Pooled<C>, DbError>
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

macro_rules! pooled_connection {
    ($ty:ty, $kind:expr, $accepts:expr, $needs:literal) => {
        #[diagnostic::do_not_recommend]
        impl DbConnection for $ty {
            const KIND: ConnectionKind = $kind;
            type Pool = ConnectionPool<$ty>;
            type Guard = Pooled<$ty>;

            fn open_pool(target: Option<&DbTarget>, size: u32) -> Result<Self::Pool, DbError> {
                match target {
                    Some(target) if $accepts(target) => open_r2d2::<$ty>(target, size),
                    Some(other) => Err(DbError::Mismatch(format!(
                        "`process` takes `&mut {}`, which needs {}, but the sys-map configures {}",
                        stringify!($ty),
                        $needs,
                        other.display()
                    ))),
                    None => Err(DbError::Mismatch(format!(
                        "`process` takes `&mut {}` but no database is configured",
                        stringify!($ty)
                    ))),
                }
            }

            fn checkout(pool: &Self::Pool) -> Result<Self::Guard, DbError> {
                checkout_tested(pool)
            }
        }
    };
}

pooled_connection!(
    diesel::PgConnection,
    ConnectionKind::Postgres,
    |t: &DbTarget| matches!(t, DbTarget::Postgres { .. }),
    "PostgreSQL"
);
pooled_connection!(
    diesel::SqliteConnection,
    ConnectionKind::Sqlite,
    |t: &DbTarget| matches!(t, DbTarget::Sqlite(_)),
    "SQLite"
);
pooled_connection!(AnyConnection, ConnectionKind::Any, |_: &DbTarget| true, "a database");

/// Creates the directory of a SQLite file, so a fresh checkout just runs.
fn create_sqlite_dir(target: &DbTarget) -> Result<(), DbError> {
    if let DbTarget::Sqlite(path) = target {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| DbError::Connect {
                target: target.display(),
                message: format!("cannot create {}: {e}", dir.display()),
            })?;
        }
    }
    Ok(())
}

/// Opens one connection to `target` outside any pool. Blocking.
pub(crate) fn establish_any(target: &DbTarget) -> Result<AnyConnection, DbError> {
    use diesel::Connection;
    create_sqlite_dir(target)?;
    let mut connection = AnyConnection::establish(&target.url()).map_err(|e| DbError::Connect {
        target: target.display(),
        message: e.to_string(),
    })?;
    if matches!(target, DbTarget::Sqlite(_)) {
        use diesel::connection::SimpleConnection;
        connection.batch_execute(SQLITE_PRAGMAS).map_err(|e| DbError::Connect {
            target: target.display(),
            message: e.to_string(),
        })?;
    }
    Ok(connection)
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::prelude::*;

    #[test]
    fn a_pg_function_refuses_sqlite() {
        let err = <diesel::PgConnection as DbConnection>::open_pool(Some(&DbTarget::Sqlite("x.db".into())), 1)
            .err()
            .unwrap();
        assert!(err.to_string().contains("needs PostgreSQL"), "{err}");
    }

    #[test]
    fn within_gives_up_at_the_timeout_and_drops_a_late_result_where_it_was_made() {
        struct Late(std::sync::mpsc::Sender<std::thread::ThreadId>);
        impl Drop for Late {
            fn drop(&mut self) {
                let _ = self.0.send(std::thread::current().id());
            }
        }
        assert_eq!(within(Duration::from_secs(5), || 7).unwrap(), 7);
        let (dropped, on) = std::sync::mpsc::channel();
        let started = Instant::now();
        let late = within(Duration::from_millis(50), move || {
            std::thread::sleep(Duration::from_millis(300));
            Late(dropped)
        });
        assert!(matches!(late, Err(super::Late::Elapsed)));
        assert!(started.elapsed() < Duration::from_millis(250));
        let thread = on.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_ne!(thread, std::thread::current().id(), "dropped on the worker's thread");
    }

    #[test]
    fn within_reuses_its_threads() {
        let threads: std::collections::HashSet<_> = (0..20)
            .map(|_| within(Duration::from_secs(5), || std::thread::current().id()).unwrap())
            .collect();
        // Other tests may take an idle thread meanwhile, but not one each time.
        assert!(threads.len() < 10, "{} threads for 20 calls", threads.len());
    }

    #[test]
    fn any_connection_opens_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let pool = AnyConnection::open_pool(Some(&DbTarget::Sqlite(dir.path().join("t.db"))), 2).unwrap();
        let mut conn = AnyConnection::checkout(&pool).unwrap();
        diesel::sql_query("CREATE TABLE t (x INTEGER)")
            .execute(&mut *conn)
            .unwrap();
        assert_eq!(
            diesel::sql_query("INSERT INTO t VALUES (1)")
                .execute(&mut *conn)
                .unwrap(),
            1
        );
    }
}
