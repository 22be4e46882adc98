// Any collection of `(u64, Case)` pairs.
use slingshot::testing::Harness;
use slingshot::CaseValue;
use std::collections::{BTreeMap, HashMap};

#[slingshot::microservice(name = "vec", sys_map = "sys-map.example.com", main = false)]
fn vec(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true), (request + 1, false)]
}

#[slingshot::microservice(name = "array", sys_map = "sys-map.example.com", main = false)]
fn array(request: u64) -> [(u64, i32); 2] {
    [(request, -1), (request + 1, 1)]
}

#[slingshot::microservice(name = "option", sys_map = "sys-map.example.com", main = false)]
fn option(request: u64) -> Option<(u64, String)> {
    (request > 10).then(|| (request, "big".to_string()))
}

#[slingshot::microservice(name = "hashmap", sys_map = "sys-map.example.com", main = false)]
fn hashmap(request: u64) -> HashMap<u64, bool> {
    HashMap::from([(request, true)])
}

#[slingshot::microservice(name = "btreemap", sys_map = "sys-map.example.com", main = false)]
fn btreemap(request: u64) -> BTreeMap<u64, &'static str> {
    BTreeMap::from([(request, "a"), (request + 1, "b")])
}

#[slingshot::microservice(name = "iterator", sys_map = "sys-map.example.com", main = false)]
fn iterator(request: u64) -> impl Iterator<Item = (u64, u8)> {
    (0..3).map(move |i| (request + u64::from(i), i))
}

#[slingshot::microservice(name = "boxed", sys_map = "sys-map.example.com", main = false)]
fn boxed(request: u64) -> Box<dyn Iterator<Item = (u64, bool)>> {
    Box::new(std::iter::once((request, true)))
}

#[slingshot::microservice(name = "empty", sys_map = "sys-map.example.com", main = false)]
fn empty(_request: u64) -> std::iter::Empty<(u64, bool)> {
    std::iter::empty()
}

fn outputs(name: &str, id: u64) -> Vec<(u64, CaseValue)> {
    Harness::new(name).invoke(id).unwrap().executed.outputs
}

fn main() {
    assert_eq!(
        outputs("vec", 1),
        [(1, CaseValue::Bool(true)), (2, CaseValue::Bool(false))]
    );
    assert_eq!(outputs("array", 1), [(1, CaseValue::Int(-1)), (2, CaseValue::Int(1))]);
    assert_eq!(outputs("option", 11), [(11, CaseValue::Str("big".into()))]);
    assert_eq!(outputs("option", 1), []);
    assert_eq!(outputs("hashmap", 3), [(3, CaseValue::Bool(true))]);
    assert_eq!(
        outputs("btreemap", 3),
        [(3, CaseValue::Str("a".into())), (4, CaseValue::Str("b".into()))]
    );
    assert_eq!(
        outputs("iterator", 10),
        [
            (10, CaseValue::Int(0)),
            (11, CaseValue::Int(1)),
            (12, CaseValue::Int(2))
        ]
    );
    assert_eq!(outputs("boxed", 5), [(5, CaseValue::Bool(true))]);
    assert_eq!(outputs("empty", 5), []);
}
