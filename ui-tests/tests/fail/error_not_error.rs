#[derive(Debug)]
struct Failed {
    reason: String,
}

#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64) -> Result<Vec<(u64, bool)>, Failed> {
    if request == 0 {
        return Err(Failed { reason: "zero".into() });
    }
    Ok(vec![(request, true)])
}
