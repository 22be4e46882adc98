#[slingshot::microservice(name = "totals", sys_map = "sys-map.example.com")]
fn process(request: u64, #[object("in")] text: String) -> Vec<(u64, bool)> {
    vec![(request, text.is_empty())]
}
