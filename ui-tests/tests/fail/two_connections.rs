use diesel::{PgConnection, SqliteConnection};

#[slingshot::microservice(name = "thumbnailer", sys_map = "sys-map.example.com")]
fn process(request: u64, pg: &mut PgConnection, lite: &mut SqliteConnection) -> Vec<(u64, bool)> {
    let _ = (pg, lite);
    vec![(request, true)]
}
