#[slingshot::microservice(name = "classifier", sys_map = "sys-map.example.com")]
fn process(request: u64) -> Vec<(u64, Option<String>)> {
    vec![(request, Some("cat".to_string()))]
}
