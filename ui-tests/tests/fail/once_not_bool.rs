#[slingshot::microservice(name = "tokenize", sys_map = "sys-map.example.com", once = "yes")]
fn process(request: u64, connection: &mut diesel::PgConnection) -> Vec<(u64, bool)> {
    let _ = connection;
    vec![(request, true)]
}
