//! (a) The original crate's example service, as it was: PostgreSQL, S3 and RabbitMQ from an HTTP sys-map.
//!
//! Only the attribute differs (the original called
//! `Microservice::new("simple-microservice", "sys-map.example.com", process).start()`
//! in its own `main`), and the import path. It copies object `request` from
//! the `in` bucket to the `out` bucket and routes it on `"case_a"`. Run it on
//! the local services with `examples/sysmaps/simple.json` served as its
//! sys-map (the README's "The original's example" says how). For the same
//! service on the embedded default, see `simple_sqlite`.

use diesel::PgConnection;
use slingshot::{AnyError, ReadFileFn, WriteFileFn};
use std::io::{Read, Write};

#[slingshot::microservice(name = "simple-microservice", sys_map = "sys-map.example.com")]
// The original's parameter names, `connection` unused as there.
#[allow(unused_variables)]
fn process(
    request: u64,
    read_file: &ReadFileFn,
    write_file: &WriteFileFn,
    connection: &mut PgConnection,
) -> Result<Vec<(u64, String)>, AnyError> {
    let mut input = String::new();
    let mut reader = read_file("in", request)?;
    reader.read_to_string(&mut input)?;
    let mut writer = write_file("out", request)?;
    writer.write_all(input.as_bytes())?;
    Ok(vec![(request, "case_a".to_string())])
}
