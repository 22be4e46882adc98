// Only writing, with paths instead of imports.
use std::io::Write;

#[slingshot::microservice(name = "writer", sys_map = "sys-map.example.com", main = false)]
fn process(request: u64, write_file: &slingshot::WriteFileFn) -> Result<Vec<(u64, bool)>, slingshot::AnyError> {
    write!(write_file("out", request)?, "{request}")?;
    Ok(vec![(request, true)])
}

fn main() {
    let harness = slingshot::testing::Harness::new("writer");
    harness.invoke(12).unwrap();
    assert_eq!(harness.read("out", 12).unwrap(), b"12");
}
