// Strings route by their text.
use slingshot::testing::Harness;
use slingshot::CaseValue;
use std::borrow::Cow;

#[slingshot::microservice(name = "owned", sys_map = "sys-map.example.com", main = false)]
fn owned(request: u64) -> Vec<(u64, String)> {
    vec![(request, format!("n{request}"))]
}

#[slingshot::microservice(name = "static", sys_map = "sys-map.example.com", main = false)]
fn borrowed(request: u64) -> Vec<(u64, &'static str)> {
    vec![(request, "cat")]
}

#[slingshot::microservice(name = "cow", sys_map = "sys-map.example.com", main = false)]
fn cow(request: u64) -> Vec<(u64, Cow<'static, str>)> {
    vec![(request, Cow::Borrowed("dog"))]
}

fn main() {
    let run = Harness::new("owned").route("n3", &["three"]).invoke(3).unwrap();
    assert_eq!(run.routes, [("three".to_string(), 3)]);
    let run = Harness::new("static").route("cat", &["cats"]).invoke(3).unwrap();
    assert_eq!(run.routes, [("cats".to_string(), 3)]);
    let run = Harness::new("cow").invoke(3).unwrap();
    assert_eq!(run.executed.outputs, [(3, CaseValue::Str("dog".into()))]);
    assert_eq!(run.unrouted.len(), 1);
}
