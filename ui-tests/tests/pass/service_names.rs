// Names are sys-map path segments: letters, digits, '-', '_' and '.'.
use slingshot::ServiceDef;

#[slingshot::microservice(name = "a", sys_map = "localhost:8080", main = false)]
fn one(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

#[slingshot::microservice(name = "Image_Resizer-2.v1", sys_map = "http://127.0.0.1:9000", main = false)]
fn two(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

#[slingshot::microservice(sys_map = "sys-map.example.com", main = false, name = "keys-in-any-order")]
fn three(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

#[slingshot::microservice(name = "digits-0123", sys_map = "x", main = false)]
fn four(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

fn main() {
    for name in ["a", "Image_Resizer-2.v1", "keys-in-any-order", "digits-0123"] {
        assert_eq!(ServiceDef::named(name).unwrap().name, name);
    }
}
