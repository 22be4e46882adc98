struct Verdict {
    spam: bool,
}

#[slingshot::microservice(name = "classifier", sys_map = "sys-map.example.com")]
fn process(request: u64) -> Vec<(u64, Verdict)> {
    vec![(request, Verdict { spam: false })]
}
