#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u32) -> Vec<(u64, bool)> {
    vec![(u64::from(request), true)]
}
