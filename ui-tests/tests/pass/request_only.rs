// The smallest service: the request ID in, outputs out.
use slingshot::db::ConnectionKind;
use slingshot::testing::Harness;
use slingshot::{CaseValue, ServiceDef};

#[slingshot::microservice(name = "echo", sys_map = "sys-map.example.com", main = false)]
fn process(request: u64) -> Vec<(u64, bool)> {
    vec![(request, request % 2 == 0)]
}

fn main() {
    let def = ServiceDef::named("echo").unwrap();
    assert_eq!(def.name, "echo");
    assert_eq!(def.sys_map, "sys-map.example.com");
    assert_eq!(def.function, "process");
    assert_eq!(def.connection, ConnectionKind::None);
    let run = Harness::new("echo").route(true, &["even"]).invoke(4).unwrap();
    assert_eq!(run.executed.outputs, [(4, CaseValue::Bool(true))]);
    assert_eq!(run.routes, [("even".to_string(), 4)]);
}
