#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process<T: Default>(request: u64) -> Vec<(u64, bool)> {
    let _ = T::default();
    vec![(request, true)]
}
