//! (b) The `simple` service on the embedded default: a SQLite connection, an in-process broker, a directory.
//!
//! The same copy as `simple`, with `&mut SqliteConnection`: it records each
//! request's size in a table of the SQLite file the sys-map names, and
//! routes on the size, `"case_a"` for an even one, `"case_b"` for an odd one.
//! Try it: put a file at `.slingshot/simple-sqlite/objects/simple-in/1`,
//! then `cargo run -p slingshot-examples --bin simple_sqlite -- invoke 1`.

use diesel::sql_types::BigInt;
use diesel::{RunQueryDsl, SqliteConnection};
use slingshot::{AnyError, ReadFileFn, WriteFileFn};
use std::io::{Read, Write};

#[slingshot::microservice(name = "simple-sqlite", sys_map = "file:examples/sysmaps/simple_sqlite.json")]
fn process(
    request: u64,
    read_file: &ReadFileFn,
    write_file: &WriteFileFn,
    connection: &mut SqliteConnection,
) -> Result<Vec<(u64, String)>, AnyError> {
    let mut input = String::new();
    read_file("in", request)?.read_to_string(&mut input)?;
    write_file("out", request)?.write_all(input.as_bytes())?;
    // A local example sets up its own table; a deployed service would
    // leave that to a migration that runs before it starts.
    diesel::sql_query("CREATE TABLE IF NOT EXISTS copies (id BIGINT PRIMARY KEY, bytes BIGINT NOT NULL)")
        .execute(connection)?;
    // An upsert: a redelivered request writes the same row again.
    diesel::sql_query(
        "INSERT INTO copies (id, bytes) VALUES (?, ?) ON CONFLICT (id) DO UPDATE SET bytes = excluded.bytes",
    )
    .bind::<BigInt, _>(i64::try_from(request)?)
    .bind::<BigInt, _>(i64::try_from(input.len())?)
    .execute(connection)?;
    let case = if input.len().is_multiple_of(2) {
        "case_a"
    } else {
        "case_b"
    };
    Ok(vec![(request, case.to_string())])
}
