//! (e) A typed stage: it takes an invoice document as a Rust value, checked
//! against its type before `process` runs, and writes a total document.
//!
//! `#[object("in")] invoice: Json<Invoice>` reads object `request` of the
//! bucket behind `in` and parses it; one that does not parse (a string
//! where an amount belongs, a missing field) is dead-lettered at once as
//! `invalid-input`, naming the field, and `process` never sees it.
//! `invoices schema` prints both types' JSON Schemas; `invoices asyncapi`
//! puts them in the AsyncAPI document.
//!
//! On the embedded default: `SLINGSHOT_SYS_MAP=file:examples/sysmaps/invoices.json
//! cargo run -p slingshot-examples --bin invoices -- invoke 1` (after
//! putting an invoice at `.slingshot/invoices/objects/invoices/1`).

use serde::{Deserialize, Serialize};
use slingshot::{AnyError, Json, JsonWriter};

/// An invoice as the upstream system writes it.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Invoice {
    /// Who pays.
    customer: String,
    /// ISO 4217 code, e.g. `EUR`.
    currency: String,
    lines: Vec<Line>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Line {
    description: String,
    /// In cents.
    amount: u64,
    #[serde(default = "one")]
    quantity: u32,
}

fn one() -> u32 {
    1
}

/// What this stage writes for the next.
#[derive(Debug, Serialize, schemars::JsonSchema)]
struct Total {
    customer: String,
    currency: String,
    /// In cents.
    total: u64,
    /// The description of the costliest line, if any.
    largest: Option<String>,
}

/// Totals an invoice; routes `large` ones (over 1,000.00) apart.
#[slingshot::microservice(name = "invoice-totals", sys_map = "file:examples/sysmaps/invoices.json")]
fn process(
    request: u64,
    #[object("in")] invoice: Json<Invoice>,
    #[object("out")] totals: JsonWriter<Total>,
) -> Result<Vec<(u64, &'static str)>, AnyError> {
    let Invoice {
        customer,
        currency,
        lines,
    } = invoice.into_inner();
    let cost = |line: &Line| line.amount * u64::from(line.quantity);
    let total = lines.iter().map(cost).sum();
    let largest = lines
        .iter()
        .max_by_key(|line| cost(line))
        .map(|line| line.description.clone());
    totals.write(
        request,
        &Total {
            customer,
            currency,
            total,
            largest,
        },
    )?;
    Ok(vec![(request, if total > 100_000 { "large" } else { "small" })])
}
