use slingshot::ReadFileFn;

#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64, read_file: &'static ReadFileFn) -> Vec<(u64, bool)> {
    vec![(request, read_file("in", request).is_ok())]
}
