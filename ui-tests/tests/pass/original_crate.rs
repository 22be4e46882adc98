// The original crate's example, unchanged but for the attribute replacing
// `Microservice::new(...).start()` and the import path.
use diesel::PgConnection;
use slingshot::{AnyError, ReadFileFn, WriteFileFn};
use std::io::{Read, Write};

#[slingshot::microservice(name = "simple-microservice", sys_map = "sys-map.example.com", main = false)]
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
fn main() {}
