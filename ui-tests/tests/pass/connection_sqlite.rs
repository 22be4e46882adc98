// The embedded default's database, first among the references.
use diesel::connection::SimpleConnection;
use diesel::SqliteConnection;
use slingshot::db::ConnectionKind;
use slingshot::testing::Harness;
use slingshot::{AnyError, ReadFileFn, ServiceDef};

#[slingshot::microservice(name = "lite", sys_map = "file:sysmap.json", main = false)]
fn process(
    request: u64,
    connection: &mut SqliteConnection,
    read_file: &ReadFileFn,
) -> Result<Vec<(u64, bool)>, AnyError> {
    connection.batch_execute("CREATE TABLE IF NOT EXISTS seen (id BIGINT NOT NULL)")?;
    connection.batch_execute(&format!("INSERT INTO seen (id) VALUES ({request})"))?;
    Ok(vec![(request, read_file("in", request).is_ok())])
}

fn main() {
    assert_eq!(ServiceDef::named("lite").unwrap().connection, ConnectionKind::Sqlite);
    let run = Harness::new("lite").invoke(8).unwrap();
    assert_eq!(run.executed.outputs.len(), 1);
}
