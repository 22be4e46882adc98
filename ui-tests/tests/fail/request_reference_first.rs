use slingshot::ReadFileFn;

#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(read_file: &ReadFileFn, request: u64) -> Vec<(u64, bool)> {
    vec![(request, read_file("in", request).is_ok())]
}
