use slingshot::Json;

#[derive(serde::Deserialize, schemars::JsonSchema)]
struct Invoice {
    total: u64,
}

#[slingshot::microservice(name = "totals", sys_map = "sys-map.example.com")]
fn process(request: u64, invoice: Json<Invoice>) -> Vec<(u64, bool)> {
    vec![(request, invoice.total > 0)]
}
