#[slingshot::microservice(name = "thumbnailer", sys_map = env!("SYS_MAP"))]
fn process(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}
