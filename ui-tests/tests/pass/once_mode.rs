// `once = true` on a service with a connection of each kind; `once = false`
// is the default, written out.
use diesel::{PgConnection, SqliteConnection};
use slingshot::AnyConnection;

#[slingshot::microservice(name = "once-pg", sys_map = "sys-map.example.com", main = false, once = true)]
fn once_pg(request: u64, connection: &mut PgConnection) -> Vec<(u64, bool)> {
    let _ = connection;
    vec![(request, true)]
}

#[slingshot::microservice(name = "once-sqlite", sys_map = "sys-map.example.com", main = false, once = true)]
fn once_sqlite(request: u64, connection: &mut SqliteConnection) -> Vec<(u64, bool)> {
    let _ = connection;
    vec![(request, true)]
}

#[slingshot::microservice(name = "once-any", sys_map = "sys-map.example.com", main = false, once = true)]
fn once_any(request: u64, connection: &mut AnyConnection) -> Vec<(u64, bool)> {
    let _ = connection;
    vec![(request, true)]
}

#[slingshot::microservice(name = "plain", sys_map = "sys-map.example.com", main = false, once = false)]
fn plain(request: u64) -> Vec<(u64, bool)> {
    vec![(request, true)]
}

fn main() {}
