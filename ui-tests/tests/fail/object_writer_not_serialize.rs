use slingshot::JsonWriter;

// JsonSchema, but no Serialize: it cannot be written.
#[derive(schemars::JsonSchema)]
struct Total {
    total: u64,
}

#[slingshot::microservice(name = "totals", sys_map = "sys-map.example.com")]
fn process(request: u64, #[object("out")] totals: JsonWriter<Total>) -> Vec<(u64, bool)> {
    let _ = totals;
    vec![(request, true)]
}
