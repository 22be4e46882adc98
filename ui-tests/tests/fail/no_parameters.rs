#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process() -> Vec<(u64, bool)> {
    vec![(1, true)]
}
