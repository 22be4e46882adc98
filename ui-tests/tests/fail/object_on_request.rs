#[slingshot::microservice(name = "totals", sys_map = "sys-map.example.com")]
fn process(#[object("in")] request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}
