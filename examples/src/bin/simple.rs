//! (a) A single service in the original crate's style: reads object `request`
//! from the `in` bucket, writes it to the `out` bucket, routes by string case.
//!
//! Only the attribute differs from the original crate's example (which called
//! `Microservice::new("simple-microservice", "sys-map.example.com", process).start()`).
//! Try it locally: `cargo run -p slingshot-examples --bin simple -- invoke 1`
//! after putting a file at `.slingshot/simple/objects/simple-in/1`.

use diesel::SqliteConnection;
use slingshot::{AnyError, ReadFileFn, WriteFileFn};
use std::io::{Read, Write};

#[slingshot::microservice(name = "simple-microservice", sys_map = "file:examples/sysmaps/simple.json")]
fn process(
    request: u64,
    read_file: &ReadFileFn,
    write_file: &WriteFileFn,
    _connection: &mut SqliteConnection,
) -> Result<Vec<(u64, String)>, AnyError> {
    let mut input = String::new();
    let mut reader = read_file("in", request)?;
    reader.read_to_string(&mut input)?;
    let mut writer = write_file("out", request)?;
    writer.write_all(input.as_bytes())?;
    // The original example's own words, kept as they were.
    #[allow(clippy::manual_is_multiple_of)]
    let case = if input.len() % 2 == 0 { "case_a" } else { "case_b" };
    Ok(vec![(request, case.to_string())])
}
