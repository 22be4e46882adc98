const GENERATE_MAIN: bool = false;

#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com", main = GENERATE_MAIN)]
fn process(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

fn main() {}
