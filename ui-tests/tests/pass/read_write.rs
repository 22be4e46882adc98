// Object storage: read from one bucket, write to another.
use slingshot::testing::Harness;
use slingshot::{AnyError, ReadFileFn, WriteFileFn};
use std::io::{Read, Write};

#[slingshot::microservice(name = "upper", sys_map = "sys-map.example.com", main = false)]
fn process(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    let mut text = String::new();
    read_file("in", request)?.read_to_string(&mut text)?;
    write_file("out", request)?.write_all(text.to_uppercase().as_bytes())?;
    Ok(vec![(request, text.is_empty())])
}

fn main() {
    let harness = Harness::new("upper").object("in", 3, "abc");
    harness.invoke(3).unwrap();
    assert_eq!(harness.read("out", 3).unwrap(), b"ABC");
}
