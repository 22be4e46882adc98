#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
struct Process {
    request: u64,
}
