#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64) -> u64 {
    request
}
