//! A PostgreSQL database of one test's own on the shared server: created
//! empty before the test's services start, dropped when the test ends, pass
//! or fail.
//!
//! Tests never share tables, so none of them races another (or a run before
//! it) on `CREATE TABLE`, and none sees rows another left behind. Every name
//! is `slingshot_test_<pid>_<n>_<label>`; `scripts/services.sh` drops those
//! whose process is gone (a run that was killed before its drops ran).

use std::sync::atomic::{AtomicU64, Ordering};

use diesel::{Connection, PgConnection, RunQueryDsl};

/// The prefix of every per-test database name (`scripts/services.sh` knows it).
pub const PREFIX: &str = "slingshot_test_";

static SEQ: AtomicU64 = AtomicU64::new(0);

/// A database created for one test; dropped (`WITH (FORCE)`) with this value.
pub struct TestDatabase {
    name: String,
    admin_url: String,
    url: String,
}

impl TestDatabase {
    /// Creates an empty database named after `label`, connecting as the role
    /// of `admin_url` (which needs `CREATEDB`; `scripts/services.sh` grants
    /// it). Blocking. Panics, saying why, if PostgreSQL refuses.
    pub fn create(admin_url: &str, label: &str) -> TestDatabase {
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let mut name = format!("{PREFIX}{}_{seq}_", std::process::id());
        name.extend(label.chars().map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '_',
        }));
        name.truncate(63); // PostgreSQL's identifier limit (all ASCII here)
        let (base, _) = admin_url
            .rsplit_once('/')
            .unwrap_or_else(|| panic!("{admin_url} has no /database part"));
        let db = TestDatabase {
            url: format!("{base}/{name}"),
            name,
            admin_url: admin_url.to_string(),
        };
        let mut admin = db.admin();
        // The name holds this (live) process's ID, so one that exists was left
        // by a killed process that had the same ID.
        for sql in [
            format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", db.name),
            format!("CREATE DATABASE \"{}\"", db.name),
        ] {
            diesel::sql_query(&sql)
                .execute(&mut admin)
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        db
    }

    fn admin(&self) -> PgConnection {
        PgConnection::establish(&self.admin_url).unwrap_or_else(|e| {
            panic!(
                "cannot connect to PostgreSQL to manage the test database {}: {e}",
                self.name
            )
        })
    }

    /// The database's name (the sys-map `db` endpoint's `database`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A libpq URL of the database, credentials included.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Runs `statements` in the database, in order. Blocking.
    pub fn execute(&self, statements: &[&str]) {
        execute(&self.url, statements);
    }
}

/// Runs `statements`, in order, in the PostgreSQL database at `url`. Blocking.
pub fn execute(url: &str, statements: &[&str]) {
    let shown = url.rsplit('@').next().unwrap_or(url);
    let mut connection = PgConnection::establish(url).unwrap_or_else(|e| panic!("cannot connect to {shown}: {e}"));
    for sql in statements {
        diesel::sql_query(*sql)
            .execute(&mut connection)
            .unwrap_or_else(|e| panic!("{sql} in {shown}: {e}"));
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        // FORCE: services of the test may still hold pooled connections.
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        let dropped = PgConnection::establish(&self.admin_url)
            .map_err(|e| e.to_string())
            .and_then(|mut admin| diesel::sql_query(&sql).execute(&mut admin).map_err(|e| e.to_string()));
        if let Err(e) = dropped {
            // A test that failed already says why; one that passed must not
            // leave its database behind unnoticed.
            if std::thread::panicking() {
                eprintln!("warning: {sql}: {e}");
            } else {
                panic!("{sql}: {e}");
            }
        }
    }
}
