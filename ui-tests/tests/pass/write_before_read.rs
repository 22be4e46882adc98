// After the request ID, parameters come in any order.
use slingshot::testing::Harness;
use slingshot::{AnyError, ReadFileFn, WriteFileFn};
use std::io::{Read, Write};

#[slingshot::microservice(name = "copy", sys_map = "sys-map.example.com", main = false)]
fn process(request: u64, write_file: &WriteFileFn, read_file: &ReadFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    let mut bytes = Vec::new();
    read_file("in", request)?.read_to_end(&mut bytes)?;
    write_file("out", request)?.write_all(&bytes)?;
    Ok(vec![(request, true)])
}

fn main() {
    let harness = Harness::new("copy").object("in", 9, "same");
    harness.invoke(9).unwrap();
    assert_eq!(harness.read("out", 9).unwrap(), b"same");
}
