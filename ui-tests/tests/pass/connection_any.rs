// A connection to whichever database the sys-map configures.
use diesel::connection::SimpleConnection;
use slingshot::db::ConnectionKind;
use slingshot::testing::Harness;
use slingshot::{AnyConnection, AnyError, ServiceDef};

#[slingshot::microservice(name = "portable", sys_map = "sys-map.example.com", main = false)]
fn process(request: u64, connection: &mut AnyConnection) -> Result<Vec<(u64, bool)>, AnyError> {
    connection.batch_execute("CREATE TABLE IF NOT EXISTS seen (id BIGINT NOT NULL)")?;
    Ok(vec![(request, true)])
}

fn main() {
    assert_eq!(ServiceDef::named("portable").unwrap().connection, ConnectionKind::Any);
    let run = Harness::new("portable").invoke(2).unwrap();
    assert_eq!(run.executed.outputs.len(), 1);
}
