//! Typed objects on every backend: a two-stage pipeline whose first stage
//! takes `#[object("in")] Json<Invoice>` and writes `JsonWriter<Total>`, and
//! whose second reads and writes with `read_json`/`write_json`. Documents
//! that do not parse as their type are dead-lettered at once as
//! `invalid-input`, naming the field, and `process` never sees them.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::json;
use slingshot::broker::{HeaderValue, Message};
use slingshot::protocol::{dead_letter_queue, ATTEMPT_HEADER, ERROR_HEADER, ERROR_KIND_HEADER};
use slingshot::{AnyError, Direction, Json, JsonWriter, ReadFileFn, ServiceDef, WriteFileFn};
use slingshot_tests::{drain, drain_ids, read_object, Backend, Fixture};

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Invoice {
    customer: String,
    lines: Vec<Line>,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
struct Line {
    amount: u64,
}

#[derive(Debug, Serialize, Deserialize, PartialEq, schemars::JsonSchema)]
struct Total {
    customer: String,
    total: u64,
}

/// The IDs `ty-total`'s `process` was called with, across this binary.
static CALLED: Mutex<BTreeMap<u64, u32>> = Mutex::new(BTreeMap::new());

#[slingshot::microservice(name = "ty-total", sys_map = "file:unused.json", main = false)]
fn ty_total(
    request: u64,
    #[object("in")] invoice: Json<Invoice>,
    #[object("out")] totals: JsonWriter<Total>,
) -> Result<Vec<(u64, bool)>, AnyError> {
    *CALLED.lock().unwrap().entry(request).or_default() += 1;
    let Invoice { customer, lines } = invoice.into_inner();
    let total = lines.iter().map(|l| l.amount).sum();
    totals.write(request, &Total { customer, total })?;
    Ok(vec![(request, total > 100)])
}

/// The second stage, untyped in its signature: `read_json`/`write_json`.
#[slingshot::microservice(name = "ty-report", sys_map = "file:unused.json", main = false)]
fn ty_report(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    let total: Total = slingshot::read_json(read_file, "in", request)?;
    slingshot::write_json(
        write_file,
        "out",
        request,
        &json!({"line": format!("{}: {}", total.customer, total.total)}),
    )?;
    Ok(vec![(request, true)])
}

// Each backend its own request IDs (base 1,000, 2,000); no quorum run: queues play no part in typing.
slingshot_tests::on_every_backend!(with [embedded: Embedded(1_000), real: Real(2_000)] a_typed_pipeline_checks_its_documents_before_process_runs);

fn header(message: &Message, name: &str) -> String {
    match message.headers.get(name) {
        Some(HeaderValue::Str(s)) => s.clone(),
        other => panic!("header {name} is {other:?}"),
    }
}

async fn a_typed_pipeline_checks_its_documents_before_process_runs(backend: Backend, base: u64) {
    let f = Fixture::new(backend, "typed");
    let (invoices, totals, reports) = (f.bucket("invoices"), f.bucket("totals"), f.bucket("reports"));
    let runtime = f
        .runtime(json!({
            "ty-total": {"in": f.q("total"), "out": [{"case": true, "queues": [f.q("report")]},
                                                    {"case": false, "queues": [f.q("small")]}]},
            "ty-total/in": invoices,
            "ty-total/out": totals,
            "ty-report": {"in": f.q("report"), "out": [{"case": true, "queues": [f.q("done")]}]},
            "ty-report/in": totals,
            "ty-report/out": reports,
        }))
        .await;
    let store = runtime.store().clone();
    let documents: [(u64, &str); 7] = [
        (1, r#"{"customer": "ada", "lines": [{"amount": 60}, {"amount": 70}]}"#),
        (2, r#"{"customer": "bob", "lines": [{"amount": 5}]}"#),
        (
            3,
            r#"{"customer": "cy", "lines": [], "note": "unknown fields are ignored"}"#,
        ),
        // A string where a number belongs, in the second line.
        (4, r#"{"customer": "dee", "lines": [{"amount": 1}, {"amount": "two"}]}"#),
        (5, "not json at all"),
        (6, r#"{"customer": "eve", "lines": []} and more"#),
        (7, r#"{"lines": []}"#),
    ];
    for (id, text) in documents {
        store
            .put_bytes(&invoices, &(base + id).to_string(), text.into())
            .await
            .unwrap();
    }
    let services = [
        runtime.start(ServiceDef::find("ty-total").unwrap()).await.unwrap(),
        runtime.start(ServiceDef::find("ty-report").unwrap()).await.unwrap(),
    ];
    runtime.send(&f.q("total"), (1..=7).map(|id| base + id)).await.unwrap();
    runtime
        .run_until_idle(&services.iter().collect::<Vec<_>>())
        .await
        .unwrap();

    // The valid documents went through both stages.
    let total = |id: u64| {
        let store = store.clone();
        let totals = totals.clone();
        async move {
            let bytes = read_object(&store, &totals, base + id).await?;
            Some(serde_json::from_slice::<Total>(&bytes).expect("a Total"))
        }
    };
    assert_eq!(
        total(1).await,
        Some(Total {
            customer: "ada".into(),
            total: 130
        })
    );
    assert_eq!(
        total(2).await,
        Some(Total {
            customer: "bob".into(),
            total: 5
        })
    );
    assert_eq!(
        total(3).await,
        Some(Total {
            customer: "cy".into(),
            total: 0
        })
    );
    let report = read_object(&store, &reports, base + 1).await.expect("report 1");
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&report).unwrap(),
        json!({"line": "ada: 130"})
    );
    assert_eq!(drain_ids(runtime.broker().as_ref(), &f.q("done")).await, [base + 1]);
    let mut small = drain_ids(runtime.broker().as_ref(), &f.q("small")).await;
    small.sort();
    assert_eq!(small, [base + 2, base + 3]);

    // The others: dead-lettered at once, `process` never called.
    let called = CALLED.lock().unwrap().clone();
    for id in 4..=7 {
        assert_eq!(called.get(&(base + id)), None, "process ran for invalid document {id}");
        assert_eq!(read_object(&store, &totals, base + id).await, None);
    }
    let dead = drain(runtime.broker().as_ref(), &dead_letter_queue(&f.q("total"))).await;
    let mut errors = BTreeMap::new();
    for d in &dead {
        let id: u64 = std::str::from_utf8(&d.message.body).unwrap().parse().unwrap();
        assert_eq!(header(&d.message, ERROR_KIND_HEADER), "invalid-input", "{id}");
        assert_eq!(
            d.message.headers.get(ATTEMPT_HEADER),
            Some(&HeaderValue::Int(1)),
            "an invalid document is not retried"
        );
        errors.insert(id - base, header(&d.message, ERROR_HEADER));
    }
    assert_eq!(errors.keys().copied().collect::<Vec<_>>(), [4, 5, 6, 7], "{errors:#?}");
    let object = |id: u64| format!("{invoices}/{}", base + id);
    let expect = |id: u64, parts: &[&str]| {
        let error = &errors[&id];
        assert!(error.contains(&object(id)), "{error}");
        assert!(error.contains("is not a valid Invoice"), "{error}");
        for part in parts {
            assert!(error.contains(part), "{id}: {error:?} lacks {part:?}");
        }
    };
    expect(
        4,
        &["(at lines[1].amount)", "invalid type: string \"two\", expected u64"],
    );
    expect(5, &["(at .)", "expected ident"]);
    expect(6, &["(at .)", "trailing characters"]);
    expect(7, &["(at .)", "missing field `customer`"]);
}

#[test]
fn typed_parameters_publish_their_schemas() {
    let schemas = ServiceDef::find("ty-total").unwrap().object_schemas();
    let summary: Vec<_> = schemas
        .iter()
        .map(|s| (s.reference.as_str(), s.direction, s.type_name.as_str()))
        .collect();
    assert_eq!(
        summary,
        [("in", Direction::Read, "Invoice"), ("out", Direction::Write, "Total")]
    );
    let invoice = &schemas[0].schema;
    assert_eq!(invoice["title"], "Invoice");
    assert_eq!(invoice["required"], json!(["customer", "lines"]));
    assert_eq!(invoice["properties"]["lines"]["items"]["$ref"], "#/$defs/Line");
    assert_eq!(invoice["$defs"]["Line"]["properties"]["amount"]["type"], "integer");
    // An untyped service has none.
    assert!(ServiceDef::find("ty-report").unwrap().object_schemas().is_empty());
}
