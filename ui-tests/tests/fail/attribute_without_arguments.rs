#[slingshot::microservice]
fn process(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}
