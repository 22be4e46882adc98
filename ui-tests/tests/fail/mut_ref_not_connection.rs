#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64, scratch: &mut Vec<u8>) -> Vec<(u64, bool)> {
    scratch.clear();
    vec![(request, true)]
}
