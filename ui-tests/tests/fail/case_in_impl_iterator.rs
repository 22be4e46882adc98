#[slingshot::microservice(name = "scorer", sys_map = "sys-map.example.com")]
fn process(request: u64) -> impl Iterator<Item = (u64, f64)> {
    std::iter::once((request, 0.5))
}
