use serde::{Deserialize, Serialize};
use slingshot::{AnyError, Json, JsonWriter, ReadFileFn, RequestContext};

#[derive(Deserialize, schemars::JsonSchema)]
struct Invoice {
    customer: String,
    lines: Vec<u64>,
}

#[derive(Serialize, schemars::JsonSchema)]
struct Total {
    total: u64,
}

// Typed objects among the other parameters, in any order, with other
// attributes on them; a read and a write of the same reference name apart.
#[slingshot::microservice(name = "totals", sys_map = "sys-map.example.com", main = false)]
fn process(
    request: u64,
    context: &RequestContext,
    #[object("in")] invoice: Json<Invoice>,
    read_file: &ReadFileFn,
    #[allow(unused_variables)]
    #[object("out")]
    totals: JsonWriter<Total>,
    #[object("extra")] extra: slingshot::Json<Vec<String>>,
) -> Result<Vec<(u64, bool)>, AnyError> {
    let _ = (context, read_file, &invoice.customer, extra.len());
    totals.write(request, &Total { total: invoice.lines.iter().sum() })?;
    Ok(vec![(request, true)])
}

// An async one.
#[slingshot::microservice(name = "totals-async", sys_map = "sys-map.example.com", main = false)]
async fn process_async(request: u64, #[object("in")] invoice: Json<Invoice>) -> Vec<(u64, bool)> {
    vec![(request, invoice.lines.is_empty())]
}

fn main() {
    let def = slingshot::ServiceDef::find("totals").unwrap();
    let names: Vec<_> = def.object_schemas().into_iter().map(|o| o.type_name).collect();
    assert_eq!(names, ["Array_of_string", "Invoice", "Total"]);
}
