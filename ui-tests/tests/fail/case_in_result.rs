use slingshot::AnyError;

#[slingshot::microservice(name = "scorer", sys_map = "sys-map.example.com")]
fn process(request: u64) -> Result<Vec<(u64, f32)>, AnyError> {
    Ok(vec![(request, 0.5)])
}
