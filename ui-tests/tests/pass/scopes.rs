// A service in a module, and one inside a function body.
use slingshot::ServiceDef;

mod stages {
    #[slingshot::microservice(name = "in-module", sys_map = "sys-map.example.com", main = false)]
    pub fn process(request: u64) -> Vec<(u64, bool)> {
        vec![(request, true)]
    }
}

fn main() {
    #[derive(slingshot::Case)]
    enum Local {
        Here,
    }

    #[slingshot::microservice(name = "in-function", sys_map = "sys-map.example.com", main = false)]
    fn process(request: u64) -> Vec<(u64, Local)> {
        vec![(request, Local::Here)]
    }

    assert_eq!(stages::process(1), [(1, true)]);
    assert!(matches!(process(1)[0], (1, Local::Here)));
    assert!(ServiceDef::named("in-module").is_some());
    assert!(ServiceDef::named("in-function").is_some());
}
