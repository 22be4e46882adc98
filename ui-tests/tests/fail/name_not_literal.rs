const NAME: &str = "thumbnailer";

#[slingshot::microservice(name = NAME, sys_map = "sys-map.example.com")]
fn process(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}
