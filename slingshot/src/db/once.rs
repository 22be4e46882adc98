//! The inbox and outbox of a once-mode service: their tables, and every statement a stage's transaction, the relay and the clean-up run on them.
//!
//! Each service has two tables of its own in the database its `process`
//! uses, named after it ([`Tables::of`]), so two services never share one:
//!
//! - the **inbox** holds the identity (`message-id`) of every message the
//!   service finished, recorded in the same transaction as `process`'s own
//!   writes: a message found there is done, and is acknowledged without
//!   running `process` again;
//! - the **outbox** holds the messages a committed stage has still to
//!   publish. The stage that wrote them publishes and deletes them right
//!   after its commit; the relay publishes what a crash left.
//!
//! Nothing here keeps a high-water mark: the relay takes every row still
//! there, in `seq` order, so a row whose transaction committed after a row
//! with a higher `seq` is never skipped (the classic BIGSERIAL-outbox bug).
//!
//! On PostgreSQL a stage takes a transaction-scoped advisory lock on its
//! serialization key, so two deliveries of one key never run at once on any
//! instance; the lock lives and dies with the transaction, so a database
//! restart that drops it also aborts the work it guarded. On SQLite a stage
//! begins `IMMEDIATE`: one writer at a time on the whole file.

use diesel::connection::{AnsiTransactionManager, TransactionManager};
use diesel::prelude::*;
use diesel::sql_types::{BigInt, Nullable, Text};
use diesel::{PgConnection, SqliteConnection};

/// Rows the relay and the clean-up take per statement.
pub const BATCH: i64 = 500;

/// The two tables of one service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tables {
    /// The inbox: the messages the service finished.
    pub inbox: String,
    /// The outbox: the messages committed stages have still to publish.
    pub outbox: String,
}

impl Tables {
    /// The tables of `service`: `slingshot_` and the name in lower case with
    /// anything but letters and digits as `_` (its first 30 characters),
    /// then 8 hex digits of a hash of the exact name, so names that differ
    /// only in case or punctuation get tables of their own, then `_inbox` or
    /// `_outbox`. At most 56 characters: under PostgreSQL's limit of 63.
    pub fn of(service: &str) -> Tables {
        use sha2::Digest;
        let readable: String = service
            .chars()
            .take(30)
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .collect();
        let digest = sha2::Sha256::digest(service.as_bytes());
        let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
        let base = format!("slingshot_{readable}_{hash}");
        Tables {
            inbox: format!("{base}_inbox"),
            outbox: format!("{base}_outbox"),
        }
    }
}

/// A message a committed stage has to publish.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct OutboxRow {
    /// Its place in the outbox, in the order rows were written.
    #[diesel(sql_type = BigInt)]
    pub seq: i64,
    /// The identity of the inbound message whose stage wrote it.
    #[diesel(sql_type = Text)]
    pub inbound: String,
    /// Its own `message-id`.
    #[diesel(sql_type = Text)]
    pub message_id: String,
    /// The queue it goes to.
    #[diesel(sql_type = Text)]
    pub queue: String,
    /// The request ID it carries, stored as the `i64` with the same bits.
    #[diesel(sql_type = BigInt)]
    pub request: i64,
    /// The W3C `traceparent` of the stage that wrote it, if it was traced.
    #[diesel(sql_type = Nullable<Text>)]
    pub traceparent: Option<String>,
    /// The legacy trace ID the stage's outputs carry.
    #[diesel(sql_type = Nullable<Text>)]
    pub legacy_trace: Option<String>,
    /// When it was written, Unix milliseconds.
    #[diesel(sql_type = BigInt)]
    pub created_ms: i64,
}

impl OutboxRow {
    /// The request ID it carries.
    pub fn request_id(&self) -> u64 {
        self.request as u64
    }
}

/// A message a stage is about to write to the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOutboxRow {
    /// Its `message-id`.
    pub message_id: String,
    /// The queue it goes to.
    pub queue: String,
    /// The request ID it carries.
    pub request: u64,
}

/// How many rows the outbox holds and how old its oldest is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, QueryableByName)]
pub struct Depth {
    /// Rows not yet published.
    #[diesel(sql_type = BigInt)]
    pub rows: i64,
    /// When the oldest was written, Unix milliseconds.
    #[diesel(sql_type = Nullable<BigInt>)]
    pub oldest_ms: Option<i64>,
}

#[derive(QueryableByName)]
struct Count {
    #[diesel(sql_type = BigInt)]
    n: i64,
}

/// Which SQL a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// PostgreSQL.
    Postgres,
    /// SQLite.
    Sqlite,
}

/// A value bound to a statement, or read from a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SqlValue {
    /// A 64-bit integer.
    Int(i64),
    /// Text.
    Text(String),
    /// NULL.
    Null,
}

/// A connection of another kind than diesel's that can run the inbox and
/// outbox statements (a Python service's SQLAlchemy connection). Errors are
/// their text.
pub trait OnceSql {
    /// Its SQL.
    fn dialect(&self) -> Dialect;
    /// The placeholder of the `n`th parameter (from 1) in its driver's
    /// style: `$1`, `?`, `%s`.
    fn placeholder(&self, n: usize) -> String;
    /// Begins a transaction with `sql` (`BEGIN`, `BEGIN IMMEDIATE`).
    fn begin(&mut self, sql: &str) -> Result<(), String>;
    /// Commits it.
    fn commit(&mut self) -> Result<(), String>;
    /// Rolls it back.
    fn rollback(&mut self) -> Result<(), String>;
    /// Runs a statement; the rows it changed.
    fn execute(&mut self, sql: &str, params: Vec<SqlValue>) -> Result<usize, String>;
    /// Runs a query; its rows.
    fn query(&mut self, sql: &str, params: Vec<SqlValue>) -> Result<Vec<Vec<SqlValue>>, String>;
}

/// A connection the inbox and outbox statements run on.
pub enum OnceConn<'a> {
    /// diesel's PostgreSQL.
    Pg(&'a mut PgConnection),
    /// diesel's SQLite.
    Sqlite(&'a mut SqliteConnection),
    /// Another kind of connection.
    Other(&'a mut dyn OnceSql),
}

impl std::fmt::Debug for OnceConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "OnceConn({:?})", self.dialect())
    }
}

/// The session-level advisory lock that serializes creating the tables on
/// PostgreSQL, so instances starting together do not race on the catalog.
const MIGRATION_LOCK: i64 = 0x736c_696e_6773_6f31; // "slingso1"

/// The columns of an outbox row, in [`OutboxRow`]'s order.
const OUTBOX_COLUMNS: &str = "seq, inbound, message_id, queue, request, traceparent, legacy_trace, created_ms";

/// An error of a connection that is not diesel's, as diesel's.
fn other_error(message: String) -> diesel::result::Error {
    diesel::result::Error::QueryBuilderError(message.into())
}

fn bind_all<'f, DB>(
    sql: &str,
    params: &'f [SqlValue],
) -> diesel::query_builder::BoxedSqlQuery<'f, DB, diesel::query_builder::SqlQuery>
where
    DB: diesel::backend::Backend + diesel::sql_types::HasSqlType<BigInt> + diesel::sql_types::HasSqlType<Text>,
    i64: diesel::serialize::ToSql<BigInt, DB>,
    String: diesel::serialize::ToSql<Text, DB>,
    Option<String>: diesel::serialize::ToSql<Nullable<Text>, DB>,
{
    let mut query = diesel::sql_query(sql).into_boxed::<DB>();
    for param in params {
        query = match param {
            SqlValue::Int(i) => query.bind::<BigInt, _>(*i),
            SqlValue::Text(t) => query.bind::<Text, _>(t.clone()),
            SqlValue::Null => query.bind::<Nullable<Text>, _>(None::<String>),
        };
    }
    query
}

/// A row type read from either kind of connection.
trait Row: Sized + QueryableByName<diesel::pg::Pg> + QueryableByName<diesel::sqlite::Sqlite> + 'static {
    /// The row from the values another connection read, in column order.
    fn from_values(values: Vec<SqlValue>) -> Result<Self, String>;
}

fn int(value: &SqlValue) -> Result<i64, String> {
    match value {
        SqlValue::Int(i) => Ok(*i),
        other => Err(format!("expected an integer, read {other:?}")),
    }
}

fn text(value: SqlValue) -> Result<Option<String>, String> {
    match value {
        SqlValue::Text(t) => Ok(Some(t)),
        SqlValue::Null => Ok(None),
        other => Err(format!("expected text, read {other:?}")),
    }
}

impl Row for OutboxRow {
    fn from_values(values: Vec<SqlValue>) -> Result<Self, String> {
        let [seq, inbound, message_id, queue, request, traceparent, legacy_trace, created_ms]: [SqlValue; 8] = values
            .try_into()
            .map_err(|v: Vec<_>| format!("an outbox row of {} columns", v.len()))?;
        let required = |v| text(v)?.ok_or_else(|| "NULL in a NOT NULL column".to_string());
        Ok(OutboxRow {
            seq: int(&seq)?,
            inbound: required(inbound)?,
            message_id: required(message_id)?,
            queue: required(queue)?,
            request: int(&request)?,
            traceparent: text(traceparent)?,
            legacy_trace: text(legacy_trace)?,
            created_ms: int(&created_ms)?,
        })
    }
}

impl Row for Depth {
    fn from_values(values: Vec<SqlValue>) -> Result<Self, String> {
        let [rows, oldest]: [SqlValue; 2] = values.try_into().map_err(|_| "a depth of 2 columns".to_string())?;
        Ok(Depth {
            rows: int(&rows)?,
            oldest_ms: match oldest {
                SqlValue::Null => None,
                value => Some(int(&value)?),
            },
        })
    }
}

impl Row for Count {
    fn from_values(values: Vec<SqlValue>) -> Result<Self, String> {
        Ok(Count {
            n: int(values.first().ok_or("no column")?)?,
        })
    }
}

impl OnceConn<'_> {
    /// The SQL this connection speaks.
    pub fn dialect(&self) -> Dialect {
        match self {
            OnceConn::Pg(_) => Dialect::Postgres,
            OnceConn::Sqlite(_) => Dialect::Sqlite,
            OnceConn::Other(c) => c.dialect(),
        }
    }

    /// The placeholder of the `n`th parameter, from 1.
    fn p(&self, n: usize) -> String {
        match self {
            OnceConn::Pg(_) => format!("${n}"),
            OnceConn::Sqlite(_) => "?".to_string(),
            OnceConn::Other(c) => c.placeholder(n),
        }
    }

    /// Runs a statement with `params`; the rows it changed.
    fn run(&mut self, sql: &str, params: Vec<SqlValue>) -> QueryResult<usize> {
        match self {
            OnceConn::Pg(c) => bind_all::<diesel::pg::Pg>(sql, &params).execute(*c),
            OnceConn::Sqlite(c) => bind_all::<diesel::sqlite::Sqlite>(sql, &params).execute(*c),
            OnceConn::Other(c) => c.execute(sql, params).map_err(other_error),
        }
    }

    /// Runs a query with `params`; its rows.
    fn load<R: Row>(&mut self, sql: &str, params: Vec<SqlValue>) -> QueryResult<Vec<R>> {
        match self {
            OnceConn::Pg(c) => bind_all::<diesel::pg::Pg>(sql, &params).load(*c),
            OnceConn::Sqlite(c) => bind_all::<diesel::sqlite::Sqlite>(sql, &params).load(*c),
            OnceConn::Other(c) => c
                .query(sql, params)
                .map_err(other_error)?
                .into_iter()
                .map(|values| R::from_values(values).map_err(other_error))
                .collect(),
        }
    }

    /// Runs a query that answers one row.
    fn one<R: Row>(&mut self, sql: &str, params: Vec<SqlValue>) -> QueryResult<R> {
        self.load(sql, params)?
            .into_iter()
            .next()
            .ok_or(diesel::result::Error::NotFound)
    }

    /// Creates the service's tables and indexes if they are missing.
    /// Idempotent; on PostgreSQL serialized across instances.
    pub fn migrate(&mut self, t: &Tables) -> QueryResult<()> {
        let (inbox, outbox) = (&t.inbox, &t.outbox);
        let (serial, int) = match self.dialect() {
            Dialect::Postgres => ("BIGSERIAL PRIMARY KEY", "BIGINT"),
            Dialect::Sqlite => ("INTEGER PRIMARY KEY AUTOINCREMENT", "INTEGER"),
        };
        let statements = [
            format!(
                "CREATE TABLE IF NOT EXISTS {inbox} (message_id TEXT PRIMARY KEY, request_id {int} NOT NULL, \
                 done_ms {int} NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {inbox}_done ON {inbox} (done_ms)"),
            format!(
                "CREATE TABLE IF NOT EXISTS {outbox} (seq {serial}, inbound TEXT NOT NULL, message_id TEXT NOT NULL, \
                 queue TEXT NOT NULL, request {int} NOT NULL, traceparent TEXT, legacy_trace TEXT, \
                 created_ms {int} NOT NULL)"
            ),
            format!("CREATE INDEX IF NOT EXISTS {outbox}_inbound ON {outbox} (inbound)"),
        ];
        // In a transaction of its own (a driver that is not diesel's does not
        // commit by itself); on PostgreSQL under a transaction-scoped lock.
        self.transaction(|once| {
            if once.dialect() == Dialect::Postgres {
                let lock = format!("SELECT 1 FROM pg_advisory_xact_lock({})", once.p(1));
                once.run(&lock, vec![SqlValue::Int(MIGRATION_LOCK)])?;
            }
            statements.iter().try_for_each(|sql| once.run(sql, vec![]).map(drop))
        })
    }

    /// Runs `f` in a transaction of its own: committed if it succeeds, else
    /// rolled back.
    pub fn transaction<T>(&mut self, f: impl FnOnce(&mut Self) -> QueryResult<T>) -> QueryResult<T> {
        self.begin()?;
        match f(self) {
            Ok(value) => self.commit().map(|()| value),
            Err(e) => {
                // The statement's error says more than the rollback's.
                let _ = self.rollback();
                Err(e)
            }
        }
    }

    /// Whether both tables are there and this connection may read and write
    /// them: a row is written and read back in a transaction that is rolled
    /// back.
    pub fn verify(&mut self, t: &Tables) -> QueryResult<()> {
        self.begin()?;
        let probe = (|| {
            self.claim(t, 0, "slingshot-check", 0, 0)?;
            self.pending(t, 0, 1, false)?;
            self.delete(t, &[])
        })();
        let rolled_back = self.rollback();
        probe.and(rolled_back)
    }

    /// Begins the stage's transaction (`BEGIN`; on SQLite `BEGIN IMMEDIATE`,
    /// taking the file's write lock now rather than at the first write,
    /// which could fail after `process` did its work).
    pub fn begin(&mut self) -> QueryResult<()> {
        match self {
            OnceConn::Pg(c) => AnsiTransactionManager::begin_transaction(*c),
            OnceConn::Sqlite(c) => AnsiTransactionManager::begin_transaction_sql(*c, "BEGIN IMMEDIATE"),
            OnceConn::Other(c) => {
                let sql = match c.dialect() {
                    Dialect::Postgres => "BEGIN",
                    Dialect::Sqlite => "BEGIN IMMEDIATE",
                };
                c.begin(sql).map_err(other_error)
            }
        }
    }

    /// Commits the transaction [`OnceConn::begin`] began.
    pub fn commit(&mut self) -> QueryResult<()> {
        match self {
            OnceConn::Pg(c) => AnsiTransactionManager::commit_transaction(*c),
            OnceConn::Sqlite(c) => AnsiTransactionManager::commit_transaction(*c),
            OnceConn::Other(c) => c.commit().map_err(other_error),
        }
    }

    /// Rolls back the transaction [`OnceConn::begin`] began.
    pub fn rollback(&mut self) -> QueryResult<()> {
        match self {
            OnceConn::Pg(c) => AnsiTransactionManager::rollback_transaction(*c),
            OnceConn::Sqlite(c) => AnsiTransactionManager::rollback_transaction(*c),
            OnceConn::Other(c) => c.rollback().map_err(other_error),
        }
    }

    /// Waits for the serialization lock `key` for the rest of the
    /// transaction (on SQLite the transaction holds the write lock already),
    /// then records `message_id` as done, unless it is already: `false` if
    /// it was, and the stage is a duplicate. One round trip: on PostgreSQL
    /// the lock is a CTE of the insert. A concurrent transaction recording
    /// the same message waits until this one ends.
    pub fn claim(&mut self, t: &Tables, key: i64, message_id: &str, request: u64, now_ms: i64) -> QueryResult<bool> {
        let inbox = &t.inbox;
        let mut params = vec![
            SqlValue::Text(message_id.to_string()),
            SqlValue::Int(request as i64),
            SqlValue::Int(now_ms),
        ];
        let sql = match self.dialect() {
            Dialect::Postgres => {
                params.insert(0, SqlValue::Int(key));
                format!(
                    "WITH locked AS (SELECT pg_advisory_xact_lock({})) \
                     INSERT INTO {inbox} (message_id, request_id, done_ms) SELECT {}, {}, {} FROM locked \
                     ON CONFLICT DO NOTHING",
                    self.p(1),
                    self.p(2),
                    self.p(3),
                    self.p(4)
                )
            }
            Dialect::Sqlite => format!(
                "INSERT INTO {inbox} (message_id, request_id, done_ms) VALUES ({}, {}, {}) ON CONFLICT DO NOTHING",
                self.p(1),
                self.p(2),
                self.p(3)
            ),
        };
        Ok(self.run(&sql, params)? == 1)
    }

    /// Writes the stage's outputs to the outbox, in order, with the stage's
    /// trace context; returns them as the relay would read them.
    pub fn record(
        &mut self,
        t: &Tables,
        inbound: &str,
        rows: &[NewOutboxRow],
        trace: (Option<&str>, Option<&str>),
        now_ms: i64,
    ) -> QueryResult<Vec<OutboxRow>> {
        let placeholders: Vec<String> = (1..=7).map(|n| self.p(n)).collect();
        let sql = format!(
            "INSERT INTO {} (inbound, message_id, queue, request, traceparent, legacy_trace, created_ms) \
             VALUES ({}) RETURNING {OUTBOX_COLUMNS}",
            t.outbox,
            placeholders.join(", ")
        );
        let optional = |v: Option<&str>| v.map_or(SqlValue::Null, |v| SqlValue::Text(v.to_string()));
        let mut written = Vec::with_capacity(rows.len());
        for row in rows {
            let params = vec![
                SqlValue::Text(inbound.to_string()),
                SqlValue::Text(row.message_id.clone()),
                SqlValue::Text(row.queue.clone()),
                SqlValue::Int(row.request as i64),
                optional(trace.0),
                optional(trace.1),
                SqlValue::Int(now_ms),
            ];
            written.push(self.one(&sql, params)?);
        }
        Ok(written)
    }

    /// Up to `limit` rows written before `before_ms`, in `seq` order. With
    /// `lock` (PostgreSQL, inside a transaction), each is locked until the
    /// transaction ends and rows another relay holds are skipped, so two
    /// instances never publish the same row at once.
    pub fn pending(&mut self, t: &Tables, before_ms: i64, limit: i64, lock: bool) -> QueryResult<Vec<OutboxRow>> {
        let locking = lock && self.dialect() == Dialect::Postgres;
        let sql = format!(
            "SELECT {OUTBOX_COLUMNS} FROM {} WHERE created_ms < {} ORDER BY seq LIMIT {}{}",
            t.outbox,
            self.p(1),
            self.p(2),
            if locking { " FOR UPDATE SKIP LOCKED" } else { "" }
        );
        self.load(&sql, vec![SqlValue::Int(before_ms), SqlValue::Int(limit)])
    }

    /// Whether the stage of `inbound` left rows in the outbox.
    pub fn has_pending(&mut self, t: &Tables, inbound: &str) -> QueryResult<bool> {
        let sql = format!("SELECT count(*) AS n FROM {} WHERE inbound = {}", t.outbox, self.p(1));
        let count: Count = self.one(&sql, vec![SqlValue::Text(inbound.to_string())])?;
        Ok(count.n > 0)
    }

    /// Deletes the rows `seqs`, published and confirmed. Deleting a row that
    /// is gone (another relay was faster) is not an error.
    pub fn delete(&mut self, t: &Tables, seqs: &[i64]) -> QueryResult<usize> {
        let mut deleted = 0;
        for chunk in seqs.chunks(BATCH as usize) {
            let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            deleted += self.run(&format!("DELETE FROM {} WHERE seq IN ({list})", t.outbox), vec![])?;
        }
        Ok(deleted)
    }

    /// Deletes up to [`BATCH`] inbox rows finished before `before_ms`; the
    /// number deleted. Each call is a statement of its own, so the clean-up
    /// never holds many locks for long.
    pub fn expire(&mut self, t: &Tables, before_ms: i64) -> QueryResult<usize> {
        let inbox = &t.inbox;
        let skip = match self.dialect() {
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
            Dialect::Sqlite => "",
        };
        let sql = format!(
            "DELETE FROM {inbox} WHERE message_id IN \
             (SELECT message_id FROM {inbox} WHERE done_ms < {} LIMIT {}{skip})",
            self.p(1),
            self.p(2)
        );
        self.run(&sql, vec![SqlValue::Int(before_ms), SqlValue::Int(BATCH)])
    }

    /// The outbox's depth and the age of its oldest row.
    pub fn depth(&mut self, t: &Tables) -> QueryResult<Depth> {
        let sql = format!(
            "SELECT count(*) AS rows, min(created_ms) AS oldest_ms FROM {}",
            t.outbox
        );
        self.one(&sql, vec![])
    }
}

/// The advisory-lock key of serialization key `key` in `service`: the first
/// 64 bits of a SHA-256 over both, so services do not block each other.
pub fn lock_key(service: &str, key: &str) -> i64 {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    hash.update((service.len() as u64).to_le_bytes());
    hash.update(service.as_bytes());
    hash.update(key.as_bytes());
    let digest = hash.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_le_bytes(first)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diesel::connection::SimpleConnection;

    fn sqlite() -> (tempfile::TempDir, SqliteConnection) {
        let dir = tempfile::tempdir().unwrap();
        let mut c = SqliteConnection::establish(&dir.path().join("once.db").display().to_string()).unwrap();
        c.batch_execute(crate::db::SQLITE_PRAGMAS).unwrap();
        (dir, c)
    }

    #[test]
    fn table_names_are_short_distinct_and_stable() {
        let a = Tables::of("tokenize");
        assert_eq!(a, Tables::of("tokenize"));
        assert!(
            a.inbox.starts_with("slingshot_tokenize_") && a.inbox.ends_with("_inbox"),
            "{a:?}"
        );
        assert_ne!(Tables::of("Tokenize").inbox, a.inbox);
        assert_ne!(Tables::of("a-b").inbox, Tables::of("a_b").inbox);
        let long = Tables::of(&"x.".repeat(100));
        assert!(long.outbox.len() <= 63, "{}", long.outbox);
    }

    #[test]
    fn a_claimed_message_is_a_duplicate_and_a_rolled_back_claim_is_not() {
        let (_dir, mut c) = sqlite();
        let t = Tables::of("stage");
        let mut once = OnceConn::Sqlite(&mut c);
        once.migrate(&t).unwrap();
        once.migrate(&t).unwrap();
        once.begin().unwrap();
        assert!(once.claim(&t, 7, "m-1", 1, 10).unwrap());
        once.rollback().unwrap();
        once.begin().unwrap();
        assert!(
            once.claim(&t, 7, "m-1", 1, 10).unwrap(),
            "a rolled-back claim is forgotten"
        );
        once.commit().unwrap();
        assert!(!once.claim(&t, 7, "m-1", 1, 10).unwrap());
        assert_eq!(once.expire(&t, 11).unwrap(), 1);
        assert!(
            once.claim(&t, 7, "m-1", 1, 20).unwrap(),
            "expired, a late duplicate runs again"
        );
    }

    #[test]
    fn the_outbox_gives_rows_back_in_order_until_deleted() {
        let (_dir, mut c) = sqlite();
        let t = Tables::of("stage");
        let mut once = OnceConn::Sqlite(&mut c);
        once.migrate(&t).unwrap();
        let new = |q: &str, id| NewOutboxRow {
            message_id: format!("o-{q}-{id}"),
            queue: q.into(),
            request: id,
        };
        let written = once
            .record(&t, "m-1", &[new("a", 1), new("b", u64::MAX)], (Some("00-tp"), None), 5)
            .unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(written[1].request_id(), u64::MAX);
        assert!(once.has_pending(&t, "m-1").unwrap());
        assert_eq!(
            once.pending(&t, 5, 10, false).unwrap(),
            [],
            "only rows older than the grace"
        );
        assert_eq!(once.pending(&t, 6, 10, false).unwrap(), written);
        assert_eq!(
            once.depth(&t).unwrap(),
            Depth {
                rows: 2,
                oldest_ms: Some(5)
            }
        );
        assert_eq!(once.delete(&t, &[written[0].seq, written[0].seq]).unwrap(), 1);
        assert_eq!(once.pending(&t, 6, 10, false).unwrap(), &written[1..]);
        once.delete(&t, &[written[1].seq]).unwrap();
        assert_eq!(
            once.depth(&t).unwrap(),
            Depth {
                rows: 0,
                oldest_ms: None
            }
        );
        assert!(!once.has_pending(&t, "m-1").unwrap());
        once.verify(&t).unwrap();
    }
}
