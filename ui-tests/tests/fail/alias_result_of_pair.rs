use slingshot::AnyError;

// One output is still a collection of outputs: `Option<(u64, bool)>` or
// `[(u64, bool); 1]`, not a bare pair.
type Out = Result<(u64, bool), AnyError>;

#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64) -> Out {
    Ok((request, true))
}
