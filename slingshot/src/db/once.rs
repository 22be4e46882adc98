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

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
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

/// A connection the inbox and outbox statements run on: PostgreSQL or
/// SQLite, each with its own SQL.
pub enum OnceConn<'a> {
    /// PostgreSQL.
    Pg(&'a mut PgConnection),
    /// SQLite.
    Sqlite(&'a mut SqliteConnection),
}

impl std::fmt::Debug for OnceConn<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            OnceConn::Pg(_) => "OnceConn::Pg",
            OnceConn::Sqlite(_) => "OnceConn::Sqlite",
        })
    }
}

/// The session-level advisory lock that serializes creating the tables on
/// PostgreSQL, so instances starting together do not race on the catalog.
const MIGRATION_LOCK: i64 = 0x736c_696e_6773_6f31; // "slingso1"

impl OnceConn<'_> {
    /// Creates the service's tables and indexes if they are missing.
    /// Idempotent; on PostgreSQL serialized across instances.
    pub fn migrate(&mut self, t: &Tables) -> QueryResult<()> {
        let (inbox, outbox) = (&t.inbox, &t.outbox);
        match self {
            OnceConn::Pg(c) => {
                diesel::sql_query("SELECT pg_advisory_lock($1)")
                    .bind::<BigInt, _>(MIGRATION_LOCK)
                    .execute(*c)?;
                let created = c.batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS {inbox} (
                        message_id TEXT PRIMARY KEY,
                        request_id BIGINT NOT NULL,
                        done_ms BIGINT NOT NULL);
                     CREATE INDEX IF NOT EXISTS {inbox}_done ON {inbox} (done_ms);
                     CREATE TABLE IF NOT EXISTS {outbox} (
                        seq BIGSERIAL PRIMARY KEY,
                        inbound TEXT NOT NULL,
                        message_id TEXT NOT NULL,
                        queue TEXT NOT NULL,
                        request BIGINT NOT NULL,
                        traceparent TEXT,
                        legacy_trace TEXT,
                        created_ms BIGINT NOT NULL);
                     CREATE INDEX IF NOT EXISTS {outbox}_inbound ON {outbox} (inbound);"
                ));
                let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1)")
                    .bind::<BigInt, _>(MIGRATION_LOCK)
                    .execute(*c);
                created.and(unlocked.map(drop))
            }
            OnceConn::Sqlite(c) => c.batch_execute(&format!(
                "CREATE TABLE IF NOT EXISTS {inbox} (
                    message_id TEXT PRIMARY KEY,
                    request_id INTEGER NOT NULL,
                    done_ms INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS {inbox}_done ON {inbox} (done_ms);
                 CREATE TABLE IF NOT EXISTS {outbox} (
                    seq INTEGER PRIMARY KEY AUTOINCREMENT,
                    inbound TEXT NOT NULL,
                    message_id TEXT NOT NULL,
                    queue TEXT NOT NULL,
                    request INTEGER NOT NULL,
                    traceparent TEXT,
                    legacy_trace TEXT,
                    created_ms INTEGER NOT NULL);
                 CREATE INDEX IF NOT EXISTS {outbox}_inbound ON {outbox} (inbound);"
            )),
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
        }
    }

    /// Commits the transaction [`OnceConn::begin`] began.
    pub fn commit(&mut self) -> QueryResult<()> {
        match self {
            OnceConn::Pg(c) => AnsiTransactionManager::commit_transaction(*c),
            OnceConn::Sqlite(c) => AnsiTransactionManager::commit_transaction(*c),
        }
    }

    /// Rolls back the transaction [`OnceConn::begin`] began.
    pub fn rollback(&mut self) -> QueryResult<()> {
        match self {
            OnceConn::Pg(c) => AnsiTransactionManager::rollback_transaction(*c),
            OnceConn::Sqlite(c) => AnsiTransactionManager::rollback_transaction(*c),
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
        let inserted = match self {
            OnceConn::Pg(c) => diesel::sql_query(format!(
                "WITH locked AS (SELECT pg_advisory_xact_lock($1)) \
                 INSERT INTO {inbox} (message_id, request_id, done_ms) SELECT $2, $3, $4 FROM locked \
                 ON CONFLICT DO NOTHING"
            ))
            .bind::<BigInt, _>(key)
            .bind::<Text, _>(message_id)
            .bind::<BigInt, _>(request as i64)
            .bind::<BigInt, _>(now_ms)
            .execute(*c)?,
            OnceConn::Sqlite(c) => diesel::sql_query(format!(
                "INSERT INTO {inbox} (message_id, request_id, done_ms) VALUES (?, ?, ?) ON CONFLICT DO NOTHING"
            ))
            .bind::<Text, _>(message_id)
            .bind::<BigInt, _>(request as i64)
            .bind::<BigInt, _>(now_ms)
            .execute(*c)?,
        };
        Ok(inserted == 1)
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
        let outbox = &t.outbox;
        let mut written = Vec::with_capacity(rows.len());
        for row in rows {
            let (traceparent, legacy) = trace;
            let sql = |p: [&str; 7]| {
                format!(
                    "INSERT INTO {outbox} (inbound, message_id, queue, request, traceparent, legacy_trace, created_ms) \
                     VALUES ({}, {}, {}, {}, {}, {}, {}) \
                     RETURNING seq, inbound, message_id, queue, request, traceparent, legacy_trace, created_ms",
                    p[0], p[1], p[2], p[3], p[4], p[5], p[6]
                )
            };
            let one: OutboxRow = match self {
                OnceConn::Pg(c) => diesel::sql_query(sql(["$1", "$2", "$3", "$4", "$5", "$6", "$7"]))
                    .bind::<Text, _>(inbound)
                    .bind::<Text, _>(&row.message_id)
                    .bind::<Text, _>(&row.queue)
                    .bind::<BigInt, _>(row.request as i64)
                    .bind::<Nullable<Text>, _>(traceparent)
                    .bind::<Nullable<Text>, _>(legacy)
                    .bind::<BigInt, _>(now_ms)
                    .get_result(*c)?,
                OnceConn::Sqlite(c) => diesel::sql_query(sql(["?"; 7]))
                    .bind::<Text, _>(inbound)
                    .bind::<Text, _>(&row.message_id)
                    .bind::<Text, _>(&row.queue)
                    .bind::<BigInt, _>(row.request as i64)
                    .bind::<Nullable<Text>, _>(traceparent)
                    .bind::<Nullable<Text>, _>(legacy)
                    .bind::<BigInt, _>(now_ms)
                    .get_result(*c)?,
            };
            written.push(one);
        }
        Ok(written)
    }

    /// Up to `limit` rows written before `before_ms`, in `seq` order. With
    /// `lock` (PostgreSQL, inside a transaction), each is locked until the
    /// transaction ends and rows another relay holds are skipped, so two
    /// instances never publish the same row at once.
    pub fn pending(&mut self, t: &Tables, before_ms: i64, limit: i64, lock: bool) -> QueryResult<Vec<OutboxRow>> {
        let outbox = &t.outbox;
        let columns = "seq, inbound, message_id, queue, request, traceparent, legacy_trace, created_ms";
        match self {
            OnceConn::Pg(c) => diesel::sql_query(format!(
                "SELECT {columns} FROM {outbox} WHERE created_ms < $1 ORDER BY seq LIMIT $2{}",
                if lock { " FOR UPDATE SKIP LOCKED" } else { "" }
            ))
            .bind::<BigInt, _>(before_ms)
            .bind::<BigInt, _>(limit)
            .load(*c),
            OnceConn::Sqlite(c) => diesel::sql_query(format!(
                "SELECT {columns} FROM {outbox} WHERE created_ms < ? ORDER BY seq LIMIT ?"
            ))
            .bind::<BigInt, _>(before_ms)
            .bind::<BigInt, _>(limit)
            .load(*c),
        }
    }

    /// Whether the stage of `inbound` left rows in the outbox.
    pub fn has_pending(&mut self, t: &Tables, inbound: &str) -> QueryResult<bool> {
        let outbox = &t.outbox;
        let count: Count = match self {
            OnceConn::Pg(c) => diesel::sql_query(format!("SELECT count(*) AS n FROM {outbox} WHERE inbound = $1"))
                .bind::<Text, _>(inbound)
                .get_result(*c)?,
            OnceConn::Sqlite(c) => diesel::sql_query(format!("SELECT count(*) AS n FROM {outbox} WHERE inbound = ?"))
                .bind::<Text, _>(inbound)
                .get_result(*c)?,
        };
        Ok(count.n > 0)
    }

    /// Deletes the rows `seqs`, published and confirmed. Deleting a row that
    /// is gone (another relay was faster) is not an error.
    pub fn delete(&mut self, t: &Tables, seqs: &[i64]) -> QueryResult<usize> {
        let outbox = &t.outbox;
        let mut deleted = 0;
        for chunk in seqs.chunks(BATCH as usize) {
            let list = chunk.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            let sql = format!("DELETE FROM {outbox} WHERE seq IN ({list})");
            deleted += match self {
                OnceConn::Pg(c) => diesel::sql_query(sql).execute(*c)?,
                OnceConn::Sqlite(c) => diesel::sql_query(sql).execute(*c)?,
            };
        }
        Ok(deleted)
    }

    /// Deletes up to [`BATCH`] inbox rows finished before `before_ms`; the
    /// number deleted. Each call is a statement of its own, so the clean-up
    /// never holds many locks for long.
    pub fn expire(&mut self, t: &Tables, before_ms: i64) -> QueryResult<usize> {
        let inbox = &t.inbox;
        match self {
            OnceConn::Pg(c) => diesel::sql_query(format!(
                "DELETE FROM {inbox} WHERE message_id IN \
                 (SELECT message_id FROM {inbox} WHERE done_ms < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
            ))
            .bind::<BigInt, _>(before_ms)
            .bind::<BigInt, _>(BATCH)
            .execute(*c),
            OnceConn::Sqlite(c) => diesel::sql_query(format!(
                "DELETE FROM {inbox} WHERE message_id IN (SELECT message_id FROM {inbox} WHERE done_ms < ? LIMIT ?)"
            ))
            .bind::<BigInt, _>(before_ms)
            .bind::<BigInt, _>(BATCH)
            .execute(*c),
        }
    }

    /// The outbox's depth and the age of its oldest row.
    pub fn depth(&mut self, t: &Tables) -> QueryResult<Depth> {
        let sql = format!(
            "SELECT count(*) AS rows, min(created_ms) AS oldest_ms FROM {}",
            t.outbox
        );
        match self {
            OnceConn::Pg(c) => diesel::sql_query(sql).get_result(*c),
            OnceConn::Sqlite(c) => diesel::sql_query(sql).get_result(*c),
        }
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
