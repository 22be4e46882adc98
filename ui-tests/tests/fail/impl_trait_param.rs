#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64, read_file: &impl Fn(&str, u64) -> bool) -> Vec<(u64, bool)> {
    vec![(request, read_file("in", request))]
}
