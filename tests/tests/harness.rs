//! The unit-test harness: a `process` function tested in a few lines, with
//! its routed outputs and written objects recorded.

use std::io::{Read, Write};

use slingshot::testing::Harness;
use slingshot::{AnyError, CaseValue, ReadFileFn, WriteFileFn};

#[derive(slingshot::Case, Debug, PartialEq)]
enum Mood {
    #[case(rename = "loud")]
    Loud,
    Quiet,
}

#[slingshot::microservice(name = "shout", sys_map = "file:unused.json", main = false)]
fn shout(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<Vec<(u64, Mood)>, AnyError> {
    let mut text = String::new();
    read_file("in", request)?.read_to_string(&mut text)?;
    write_file("out", request)?.write_all(text.to_uppercase().as_bytes())?;
    let mood = if text.ends_with('!') { Mood::Loud } else { Mood::Quiet };
    Ok(vec![(request, mood), (request + 1, Mood::Quiet)])
}

/// Routes by integer cases past `i64::MAX`.
#[slingshot::microservice(name = "biggest", sys_map = "file:unused.json", main = false)]
fn biggest(request: u64) -> Vec<(u64, u64)> {
    vec![(request, u64::MAX)]
}

#[test]
fn integer_cases_past_i64_max_are_routed_as_the_runtime_routes_them() {
    let run = Harness::new("biggest").route(u64::MAX, &["top"]).invoke(7).unwrap();
    assert_eq!(run.routes, [("top".to_string(), 7)]);
    assert!(run.unrouted.is_empty(), "{:?}", run.unrouted);
}

#[test]
fn routes_and_objects_are_recorded() {
    let harness = Harness::new("shout")
        .route(Mood::Loud, &["megaphone", "archive"])
        .object("in", 7, "hello!");
    let run = harness.invoke(7).unwrap();
    assert_eq!(run.routes, [("megaphone".to_string(), 7), ("archive".to_string(), 7)]);
    assert_eq!(run.unrouted, [(8, CaseValue::Str("Quiet".into()))]);
    assert_eq!(harness.read("out", 7).unwrap(), b"HELLO!");
    assert_eq!(run.executed.written[0].size, 6);
}

#[test]
fn a_missing_input_is_a_storage_failure_and_writes_nothing() {
    let harness = Harness::new("shout");
    let failure = harness.invoke(3).unwrap_err();
    assert_eq!(failure.kind, slingshot::FailureKind::Storage);
    assert!(failure.message.contains("not found"), "{failure}");
    assert_eq!(harness.read("out", 3), None);
}

#[test]
#[should_panic(expected = "no service \"nope\" is linked into this binary (services: biggest, shout)")]
fn an_unknown_service_names_the_known_ones() {
    Harness::new("nope");
}
