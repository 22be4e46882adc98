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

pub mod once;
mod pool;

use std::ops::DerefMut;
use std::path::PathBuf;
use std::time::Duration;

use self::pool::{checkout_tested, open_r2d2};
pub use self::pool::{within, ConnectionPool, Late, Pooled, SQLITE_PRAGMAS};

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
/// let lost = Error::DatabaseError(DatabaseErrorKind::ClosedConnection,
/// Box::new("server closed the connection".to_string()));
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
    /// The connection as the inbox and outbox statements take it, if this
    /// type can run them (once mode needs it).
    #[doc(hidden)]
    fn once(_connection: &mut Self) -> Option<once::OnceConn<'_>> {
        None
    }
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

macro_rules! pooled_connection {
    ($ty:ty, $kind:expr, $accepts:expr, $needs:literal, $once:expr) => {
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

            fn once(connection: &mut Self) -> Option<once::OnceConn<'_>> {
                Some($once(connection))
            }
        }
    };
}

pooled_connection!(
    diesel::PgConnection,
    ConnectionKind::Postgres,
    |t: &DbTarget| matches!(t, DbTarget::Postgres { .. }),
    "PostgreSQL",
    once::OnceConn::Pg
);
pooled_connection!(
    diesel::SqliteConnection,
    ConnectionKind::Sqlite,
    |t: &DbTarget| matches!(t, DbTarget::Sqlite(_)),
    "SQLite",
    once::OnceConn::Sqlite
);
pooled_connection!(
    AnyConnection,
    ConnectionKind::Any,
    |_: &DbTarget| true,
    "a database",
    any_once
);

fn any_once(connection: &mut AnyConnection) -> once::OnceConn<'_> {
    match connection {
        AnyConnection::Postgresql(c) => once::OnceConn::Pg(c),
        AnyConnection::Sqlite(c) => once::OnceConn::Sqlite(c),
    }
}

/// Creates the directory of a SQLite file, so a fresh checkout just runs.
pub(super) fn create_sqlite_dir(target: &DbTarget) -> Result<(), DbError> {
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
    use std::time::Instant;

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
