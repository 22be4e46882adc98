struct Thumbnailer;

impl Thumbnailer {
    #[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
    fn process(request: u64) -> Vec<(u64, bool)> {
        vec![(request, true)]
    }
}
