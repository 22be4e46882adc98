// Two services in one binary, each registered under its own name.
use slingshot::ServiceDef;

#[slingshot::microservice(name = "first", sys_map = "sys-map.example.com", main = false)]
fn first(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

#[slingshot::microservice(name = "second", sys_map = "file:other.json", main = false)]
fn second(request: u64) -> Vec<(u64, bool)> {
    vec![(request, false)]
}

fn main() {
    let names: Vec<_> = ServiceDef::all().iter().map(|d| d.name).collect();
    assert_eq!(names, ["first", "second"]);
    assert_eq!(ServiceDef::named("second").unwrap().sys_map, "file:other.json");
    assert_eq!(ServiceDef::named("second").unwrap().function, "second");
    assert!(ServiceDef::named("third").is_none());
}
