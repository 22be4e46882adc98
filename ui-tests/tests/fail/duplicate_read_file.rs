use slingshot::ReadFileFn;

#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64, input: &ReadFileFn, again: &ReadFileFn) -> Vec<(u64, bool)> {
    vec![(request, input("in", request).is_ok() && again("in", request).is_ok())]
}
