#[slingshot::microservice(name = "thumb nailer", sys_map = "sys-map.example.com", retries = 3)]
fn process(request: &u64, connection: &mut diesel::PgConnection, other: &mut diesel::PgConnection) {
    let _ = (request, connection, other);
}
