// The per-request context, alone and next to the object functions.
use slingshot::testing::Harness;
use slingshot::{CaseValue, ReadFileFn, RequestContext};

#[slingshot::microservice(name = "attempts", sys_map = "sys-map.example.com", main = false)]
fn process(request: u64, context: &RequestContext) -> Vec<(u64, u32)> {
    assert_eq!(context.request, request);
    assert_eq!(context.service, "attempts");
    vec![(request, context.attempt)]
}

#[slingshot::microservice(name = "context-last", sys_map = "sys-map.example.com", main = false)]
fn with_files(request: u64, read_file: &ReadFileFn, context: &RequestContext) -> Vec<(u64, bool)> {
    vec![(request, read_file("in", request).is_ok() && !context.redelivered)]
}

fn main() {
    let run = Harness::new("attempts").invoke(5).unwrap();
    assert_eq!(run.executed.outputs, [(5, CaseValue::Int(1))]);
    let run = Harness::new("context-last").object("in", 6, "x").invoke(6).unwrap();
    assert_eq!(run.executed.outputs, [(6, CaseValue::Bool(true))]);
}
