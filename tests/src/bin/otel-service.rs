//! The two services of the tracing test: `otel-service (ingest|record) [run|...]`. `ingest` writes
//! an object to S3; `record` reads it and records its size in PostgreSQL, failing on IDs ending in
//! 13.

use std::io::{Read, Write};
use std::process::ExitCode;

use diesel::PgConnection;
use slingshot::{AnyError, ReadFileFn, ServiceDef, WriteFileFn};

/// Writes `ingested {id}` to the `out` bucket and passes the ID on.
#[slingshot::microservice(name = "ingest", sys_map = "file:unused.json", main = false)]
fn ingest(request: u64, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    write!(write_file("out", request)?, "ingested {request}")?;
    Ok(vec![(request, true)])
}

/// Reads the object `ingest` wrote and records its size; IDs ending in 13
/// fail every time, so they are retried and dead-lettered.
#[slingshot::microservice(name = "record", sys_map = "file:unused.json", main = false)]
fn record(request: u64, read_file: &ReadFileFn, connection: &mut PgConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    use diesel::RunQueryDsl;
    let mut text = String::new();
    read_file("in", request)?.read_to_string(&mut text)?;
    if request % 100 == 13 {
        return Err(format!("request {request} is unlucky").into());
    }
    diesel::sql_query("INSERT INTO otel_records (id, size) VALUES ($1, $2)")
        .bind::<diesel::sql_types::BigInt, _>(i64::try_from(request)?)
        .bind::<diesel::sql_types::BigInt, _>(i64::try_from(text.len())?)
        .execute(connection)?;
    Ok(vec![(request, true)])
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().and_then(|name| ServiceDef::named(name)) {
        Some(def) => slingshot::main_with_args(def, args[1..].to_vec()),
        None => {
            eprintln!("usage: otel-service (ingest|record) [run|...]");
            ExitCode::from(2)
        }
    }
}
