use diesel::PgConnection;

#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64, connection: &PgConnection) -> Vec<(u64, bool)> {
    let _ = connection;
    vec![(request, true)]
}
