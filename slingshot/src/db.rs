//! The database seam: which connection types `process` may take, and the per-service pool they are checked out of.
//!
//! The connection type a function declares decides the database:
//! `PgConnection` is always PostgreSQL (the sys-map's `db` endpoint),
//! `SqliteConnection` always SQLite (the file the sys-map's backends name),
//! and [`AnyConnection`] follows the sys-map, so one function runs on SQLite
//! locally and PostgreSQL in production. Connections come from an r2d2 pool
//! sized to the service's concurrency; each is tested when checked out, so a
//! broken one is replaced rather than handed to `process`.

use std::ops::DerefMut;
use std::path::PathBuf;
use std::time::Duration;

use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};

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

/// Where a pool connects.
#[derive(Clone, PartialEq, Eq)]
pub enum DbTarget {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// PostgreSQL.
    Postgres {
        /// A libpq connection URL, credentials included.
        url: String,
        /// The same without credentials, for messages.
        display: String,
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
const SQLITE_PRAGMAS: &str = "PRAGMA busy_timeout = 10000; PRAGMA journal_mode = WAL; PRAGMA foreign_keys = ON;";

/// Applies [`SQLITE_PRAGMAS`] to each pooled connection.
#[derive(Debug)]
struct SqliteSetup;

impl<C: diesel::connection::SimpleConnection> CustomizeConnection<C, diesel::r2d2::Error> for SqliteSetup {
    fn on_acquire(&self, conn: &mut C) -> Result<(), diesel::r2d2::Error> {
        conn.batch_execute(SQLITE_PRAGMAS)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

fn open_r2d2<C>(target: &DbTarget, size: u32) -> Result<Pool<ConnectionManager<C>>, DbError>
where
    C: diesel::r2d2::R2D2Connection + diesel::connection::SimpleConnection + Send + 'static,
{
    create_sqlite_dir(target)?;
    let mut builder = Pool::builder()
        .max_size(size.max(1))
        .min_idle(Some(1))
        .connection_timeout(Duration::from_secs(10))
        .test_on_check_out(true);
    if matches!(target, DbTarget::Sqlite(_)) {
        builder = builder.connection_customizer(Box::new(SqliteSetup));
    }
    builder
        .build(ConnectionManager::<C>::new(target.url()))
        .map_err(|e| DbError::Connect {
            target: target.display(),
            message: e.to_string(),
        })
}

macro_rules! pooled_connection {
    ($ty:ty, $kind:expr, $accepts:expr, $needs:literal) => {
        #[diagnostic::do_not_recommend]
        impl DbConnection for $ty {
            const KIND: ConnectionKind = $kind;
            type Pool = (Pool<ConnectionManager<$ty>>, String);
            type Guard = PooledConnection<ConnectionManager<$ty>>;

            fn open_pool(target: Option<&DbTarget>, size: u32) -> Result<Self::Pool, DbError> {
                match target {
                    Some(target) if $accepts(target) => Ok((open_r2d2::<$ty>(target, size)?, target.display())),
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
                pool.0.get().map_err(|e| DbError::Connect {
                    target: pool.1.clone(),
                    message: e.to_string(),
                })
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
