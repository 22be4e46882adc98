#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64, bucket: &String) -> Vec<(u64, bool)> {
    vec![(request, bucket.is_empty())]
}
