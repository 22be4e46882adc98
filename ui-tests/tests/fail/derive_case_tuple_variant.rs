#[derive(slingshot::Case)]
enum Verdict {
    Ham,
    Spam(f32),
}

// The enum's mistake is reported once, not again where it is used as a case.
#[slingshot::microservice(name = "classifier", sys_map = "sys-map.example.com")]
fn process(request: u64) -> Vec<(u64, Verdict)> {
    vec![(request, Verdict::Ham)]
}
