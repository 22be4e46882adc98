// Every parameter at once, the connection between the references, with
// patterns, an anonymous lifetime and attributes on the function.
use slingshot::db::ConnectionKind;
use slingshot::{AnyError, ReadFileFn, RequestContext, ServiceDef, WriteFileFn};

/// Documented, public, with an attribute of its own.
#[slingshot::microservice(name = "everything", sys_map = "https://sys-map.example.com/v1", main = false)]
#[allow(clippy::too_many_arguments)]
pub fn process(
    mut request: u64,
    _: &'_ ReadFileFn,
    connection: &mut diesel::PgConnection,
    _write: &WriteFileFn,
    context: &RequestContext,
) -> Result<Vec<(u64, bool)>, AnyError> {
    let _ = connection;
    request += u64::from(context.attempt);
    Ok(vec![(request, true)])
}

fn main() {
    let def = ServiceDef::named("everything").unwrap();
    assert_eq!(def.sys_map, "https://sys-map.example.com/v1");
    assert_eq!(def.connection, ConnectionKind::Postgres);
}
