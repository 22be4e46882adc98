// PostgreSQL named through slingshot's re-export of diesel, a type alias and
// a full path: the type is checked, not its spelling.
use slingshot::db::ConnectionKind;
use slingshot::ServiceDef;

type Db = diesel::PgConnection;

#[slingshot::microservice(name = "reexport", sys_map = "sys-map.example.com", main = false)]
fn reexport(request: u64, connection: &mut slingshot::diesel::PgConnection) -> Vec<(u64, bool)> {
    let _ = connection;
    vec![(request, true)]
}

#[slingshot::microservice(name = "alias", sys_map = "sys-map.example.com", main = false)]
fn alias(request: u64, connection: &mut Db, write_file: &slingshot::WriteFileFn) -> Vec<(u64, bool)> {
    let _ = (connection, write_file);
    vec![(request, true)]
}

#[slingshot::microservice(name = "full-path", sys_map = "sys-map.example.com", main = false)]
fn full_path(request: u64, connection: &mut ::diesel::pg::PgConnection) -> Vec<(u64, bool)> {
    let _ = connection;
    vec![(request, true)]
}

fn main() {
    for name in ["reexport", "alias", "full-path"] {
        assert_eq!(ServiceDef::named(name).unwrap().connection, ConnectionKind::Postgres);
    }
    assert_eq!(ServiceDef::named("full-path").unwrap().function, "full_path");
}
