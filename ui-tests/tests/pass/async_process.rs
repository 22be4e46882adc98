// `async fn process` is awaited, with any parameters.
use slingshot::testing::Harness;
use slingshot::{AnyError, CaseValue, ReadFileFn};
use std::io::Read;

#[slingshot::microservice(name = "async-len", sys_map = "sys-map.example.com", main = false)]
async fn process(request: u64, read_file: &ReadFileFn) -> Result<Vec<(u64, usize)>, AnyError> {
    let mut text = String::new();
    read_file("in", request)?.read_to_string(&mut text)?;
    tokio::task::yield_now().await;
    Ok(vec![(request, text.len())])
}

#[slingshot::microservice(name = "async-plain", sys_map = "sys-map.example.com", main = false)]
async fn plain(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

fn main() {
    let run = Harness::new("async-len").object("in", 1, "four").invoke(1).unwrap();
    assert_eq!(run.executed.outputs, [(1, CaseValue::Int(4))]);
    let run = Harness::new("async-plain").invoke(2).unwrap();
    assert_eq!(run.executed.outputs, [(2, CaseValue::Bool(true))]);
}
