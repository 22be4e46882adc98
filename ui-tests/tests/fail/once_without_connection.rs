// Once mode keeps its inbox and outbox in the service's database, in the
// same transaction as `process`'s writes: a service without one cannot.
#[slingshot::microservice(name = "tokenize", sys_map = "sys-map.example.com", once = true)]
fn process(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}
