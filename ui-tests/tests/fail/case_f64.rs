#[slingshot::microservice(name = "scorer", sys_map = "sys-map.example.com")]
fn process(request: u64) -> Vec<(u64, f64)> {
    vec![(request, 0.5)]
}
