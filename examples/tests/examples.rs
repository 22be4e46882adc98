//! The example binaries run as users run them: the generated `main` with
//! `invoke` and `--help`, and the pipeline end to end. Each runs on a copy of
//! its sys-map in a temporary directory so its state stays there.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Copies `examples/sysmaps/{name}` to the same place under `dir` (its relative
/// backend paths, `../../.slingshot/...`, then
/// resolve inside `dir`) and returns its `file:` location.
fn sysmap_copy(dir: &Path, name: &str) -> String {
    let target = dir.join("examples/sysmaps").join(name);
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(workspace().join("examples/sysmaps").join(name), &target).unwrap();
    format!("file:{}", target.display())
}

fn run(binary: &str, sysmap: &str, args: &[&str]) -> Output {
    Command::new(binary)
        .args(args)
        .current_dir(workspace())
        .env("SLINGSHOT_SYS_MAP", sysmap)
        .env("SLINGSHOT_LOG", "warn")
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .output()
        .expect("the example binary runs")
}

fn text(output: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn simple_sqlite_invokes_ids_on_the_embedded_default() {
    let dir = tempfile::tempdir().unwrap();
    let sysmap = sysmap_copy(dir.path(), "simple_sqlite.json");
    let state = dir.path().join(".slingshot/simple-sqlite");
    let inputs = state.join("objects/simple-in");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(inputs.join("1"), "odd").unwrap();
    std::fs::write(inputs.join("2"), "even").unwrap();

    let output = run(env!("CARGO_BIN_EXE_simple_sqlite"), &sysmap, &["invoke", "1", "2", "3"]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "request 3 has no input: {shown}");
    assert!(shown.contains("request 1: ok"), "{shown}");
    assert!(shown.contains("output 1 case \"case_b\" -> case_b_outbound"), "{shown}");
    assert!(
        shown.contains("output 2 case \"case_a\" -> case_a_outbound_1, case_a_outbound_2"),
        "{shown}"
    );
    assert!(shown.contains("wrote simple-out/2 (4 bytes)"), "{shown}");
    assert!(
        shown.contains("request 3: FAILED storage: object \"3\" not found"),
        "{shown}"
    );
    let written = state.join("objects/simple-out/2");
    assert_eq!(std::fs::read_to_string(written).unwrap(), "even");

    // Each request that succeeded left its row in the SQLite file the
    // sys-map names.
    #[derive(diesel::QueryableByName, Debug, PartialEq)]
    struct Copy {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        id: i64,
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        bytes: i64,
    }
    use diesel::{Connection, RunQueryDsl};
    let database = state.join("db.sqlite");
    let mut connection = diesel::SqliteConnection::establish(&database.display().to_string()).unwrap();
    let rows: Vec<Copy> = diesel::sql_query("SELECT id, bytes FROM copies ORDER BY id")
        .load(&mut connection)
        .unwrap();
    assert_eq!(rows, [Copy { id: 1, bytes: 3 }, Copy { id: 2, bytes: 4 }]);
}

#[test]
fn classifier_routes_by_bool() {
    let dir = tempfile::tempdir().unwrap();
    let sysmap = sysmap_copy(dir.path(), "classifier.json");
    let inputs = dir.path().join(".slingshot/classifier/objects/documents");
    std::fs::create_dir_all(&inputs).unwrap();
    std::fs::write(inputs.join("10"), "Slingshot routes this").unwrap();
    std::fs::write(inputs.join("11"), "nothing to see").unwrap();
    let output = run(env!("CARGO_BIN_EXE_classifier"), &sysmap, &["invoke", "10", "11"]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    assert!(
        shown.contains("output 10 case true -> binary-classification-true-outbound"),
        "{shown}"
    );
    assert!(
        shown.contains("output 11 case false -> binary-classification-false-outbound"),
        "{shown}"
    );
}

#[test]
fn help_lists_commands_and_environment() {
    let output = run(env!("CARGO_BIN_EXE_simple"), "file:unused.json", &["--help"]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    for needle in [
        "invoke",
        "check",
        "dead-letters",
        "topology",
        "SLINGSHOT_SYS_MAP",
        "SLINGSHOT_CONCURRENCY",
        "SLINGSHOT_SECRETS_DIR",
        "SLINGSHOT_HTTP_ADDR",
    ] {
        assert!(shown.contains(needle), "--help lacks {needle}: {shown}");
    }
    let bad = run(env!("CARGO_BIN_EXE_simple"), "file:unused.json", &["invoke", "seven"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        text(&bad).contains("invalid value 'seven' for '<IDS>...'"),
        "{}",
        text(&bad)
    );
}

#[test]
fn a_bad_sys_map_fails_fast_with_the_path() {
    let output = run(env!("CARGO_BIN_EXE_simple"), "file:/nonexistent/sysmap.json", &[]);
    let shown = text(&output);
    assert_eq!(output.status.code(), Some(1), "{shown}");
    assert!(shown.contains("/nonexistent/sysmap.json"), "{shown}");
}

#[test]
fn pipeline_runs_end_to_end() {
    let dir = tempfile::tempdir().unwrap();
    let sysmap = sysmap_copy(dir.path(), "pipeline.json");
    let output = run(env!("CARGO_BIN_EXE_pipeline"), &sysmap, &["50"]);
    let shown = text(&output);
    assert!(output.status.success(), "{shown}");
    // 50 documents, every seventh blank: 7 rejected, 43 through all stages.
    assert!(shown.contains("downstream queues: published 43"), "{shown}");
    assert!(shown.contains("rejected 7"), "{shown}");
    assert!(shown.contains("ingest: false -> rejected = 7"), "{shown}");
    assert!(shown.contains("cataloged  43"), "{shown}");
    assert!(dir.path().join(".slingshot/pipeline/objects/catalog/1").exists());
}

#[test]
fn the_pipeline_shows_progress_on_a_terminal_only() {
    let dir = tempfile::tempdir().unwrap();
    let sysmap = sysmap_copy(dir.path(), "pipeline.json");
    // Not a terminal: no progress line.
    let piped = run(env!("CARGO_BIN_EXE_pipeline"), &sysmap, &["10"]);
    assert!(piped.status.success(), "{}", text(&piped));
    assert!(!text(&piped).contains("processed:"), "{}", text(&piped));
    // A pseudo-terminal (util-linux `script`): progress on stderr.
    let command = format!("{} 10", env!("CARGO_BIN_EXE_pipeline"));
    let tty = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(workspace())
        .env("SLINGSHOT_SYS_MAP", &sysmap)
        .env("SLINGSHOT_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("util-linux script runs");
    let shown = text(&tty);
    assert!(tty.status.success(), "{shown}");
    assert!(
        shown.contains("processed: ingest 10 · tokenize 9 · catalog 9 (of 10 documents)"),
        "{shown}"
    );
}

#[test]
fn call_follows_ids_through_the_pipeline_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let sysmap = sysmap_copy(dir.path(), "pipeline.json");
    // The demo uploads documents 1 to 10; 7 is blank.
    let demo = run(env!("CARGO_BIN_EXE_pipeline"), &sysmap, &["10"]);
    assert!(demo.status.success(), "{}", text(&demo));
    let binary = env!("CARGO_BIN_EXE_pipeline");
    let followed = run(binary, &sysmap, &["service", "ingest", "call", "3", "7", "--follow"]);
    let shown = text(&followed);
    assert!(followed.status.success(), "{shown}");
    assert!(shown.contains("request 3: 3 stage(s)"), "{shown}");
    for stage in ["ingest", "tokenize", "catalog"] {
        let line = format!("       3  {stage:<20} done    attempt 1");
        assert!(shown.contains(&line), "no {line:?} in\n{shown}");
    }
    assert!(
        shown.contains("request 7: 1 stage(s)"),
        "a blank document stops at ingest:\n{shown}"
    );
    assert!(
        shown.contains("ended   7 -> rejected (no stage consumes it)"),
        "{shown}"
    );
    assert!(shown.contains("object  catalog/3 "), "{shown}");

    let called = run(binary, &sysmap, &["service", "tokenize", "call", "2", "--json"]);
    assert!(called.status.success(), "{}", text(&called));
    let outcomes: serde_json::Value = serde_json::from_slice(&called.stdout).expect("--json prints JSON");
    let outcome = &outcomes[0];
    assert_eq!(outcome["service"], "tokenize");
    assert_eq!(outcome["status"], "done");
    assert_eq!(outcome["routes"][0]["queue"], "catalog");
    assert_eq!(outcome["objects"][0]["bucket"], "tokens");
    assert_eq!(outcome["objects"][0]["key"], "2");
}

#[test]
fn a_typed_stage_checks_its_documents_and_prints_their_schemas() {
    let dir = tempfile::tempdir().unwrap();
    let sysmap = sysmap_copy(dir.path(), "invoices.json");
    let state = dir.path().join(".slingshot/invoices/objects");
    std::fs::create_dir_all(state.join("invoices")).unwrap();
    let invoice = |id: u64, text: &str| std::fs::write(state.join("invoices").join(id.to_string()), text).unwrap();
    invoice(
        1,
        r#"{"customer": "ada", "currency": "EUR",
            "lines": [{"description": "desk", "amount": 90000}, {"description": "lamp", "amount": 4500, "quantity": 4}]}"#,
    );
    invoice(
        2,
        r#"{"customer": "bob", "currency": "EUR", "lines": [{"description": "pen", "amount": "cheap"}]}"#,
    );
    let binary = env!("CARGO_BIN_EXE_invoices");

    let called = run(binary, &sysmap, &["call", "1", "2", "--json"]);
    assert_eq!(called.status.code(), Some(1), "request 2 fails: {}", text(&called));
    let outcomes: serde_json::Value = serde_json::from_slice(&called.stdout).expect("--json prints JSON");
    let by_id = |id: u64| {
        outcomes
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["id"] == id)
            .unwrap_or_else(|| panic!("no outcome for {id}: {outcomes:#}"))
    };
    assert_eq!(by_id(1)["status"], "done", "{outcomes:#}");
    assert_eq!(by_id(1)["routes"][0]["queue"], "review");
    let failed = by_id(2);
    assert_eq!(failed["status"], "failed", "{outcomes:#}");
    assert_eq!(failed["failure"]["kind"], "invalid-input");
    assert_eq!(failed["failure"]["attempts"], 1, "not retried");
    let error = failed["failure"]["error"].as_str().unwrap();
    assert!(
        error.contains("invoices/2 is not a valid Invoice") && error.contains("(at lines[0].amount)"),
        "{error}"
    );
    let total: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(state.join("totals/1")).unwrap()).unwrap();
    assert_eq!(
        total,
        serde_json::json!({"customer": "ada", "currency": "EUR", "total": 108000, "largest": "desk"})
    );
    assert!(!state.join("totals/2").exists(), "an invalid invoice writes nothing");

    let schemas = run(binary, &sysmap, &["schema"]);
    assert!(schemas.status.success(), "{}", text(&schemas));
    let schemas: serde_json::Value = serde_json::from_slice(&schemas.stdout).unwrap();
    assert_eq!(schemas[0]["reference"], "in");
    assert_eq!(schemas[0]["type"], "Invoice");
    assert_eq!(schemas[1]["direction"], "write");
    assert_eq!(
        schemas[0]["schema"]["$defs"]["Line"]["properties"]["amount"]["description"],
        "In cents."
    );
    let unknown = run(binary, &sysmap, &["schema", "thumbnails"]);
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        text(&unknown).contains("no typed object behind bucket reference \"thumbnails\" (typed references: in, out)"),
        "{}",
        text(&unknown)
    );
}
