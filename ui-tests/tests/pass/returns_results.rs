// `Result<C, E>` for any error that converts into `AnyError`.
use slingshot::testing::Harness;
use slingshot::{AnyError, CaseValue};

#[slingshot::microservice(name = "any-error", sys_map = "sys-map.example.com", main = false)]
fn any_error(request: u64) -> Result<Vec<(u64, &'static str)>, AnyError> {
    if request == 0 {
        return Err("zero is not a request".into());
    }
    Ok(vec![(request, "ok")])
}

#[slingshot::microservice(name = "anyhow", sys_map = "sys-map.example.com", main = false)]
fn with_anyhow(request: u64) -> anyhow::Result<Vec<(u64, u16)>> {
    anyhow::ensure!(request != 0, "zero is not a request");
    Ok(vec![(request, 200)])
}

#[slingshot::microservice(name = "io-error", sys_map = "sys-map.example.com", main = false)]
fn io_error(request: u64) -> Result<Option<(u64, bool)>, std::io::Error> {
    if request == 0 {
        return Err(std::io::Error::other("zero is not a request"));
    }
    Ok(Some((request, true)))
}

#[slingshot::microservice(name = "io-result", sys_map = "sys-map.example.com", main = false)]
fn io_result(request: u64) -> std::io::Result<[(u64, i64); 1]> {
    Ok([(request, -5)])
}

#[slingshot::microservice(name = "opaque-ok", sys_map = "sys-map.example.com", main = false)]
fn opaque_ok(request: u64) -> core::result::Result<impl Iterator<Item = (u64, bool)>, AnyError> {
    if request == 0 {
        return Err("zero is not a request".into());
    }
    Ok(std::iter::once((request, true)))
}

#[derive(Debug)]
struct MyError;

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("my error")
    }
}

impl std::error::Error for MyError {}

#[slingshot::microservice(name = "own-error", sys_map = "sys-map.example.com", main = false)]
fn own_error(request: u64) -> Result<Vec<(u64, bool)>, MyError> {
    if request == 0 {
        return Err(MyError);
    }
    Ok(vec![(request, true)])
}

#[slingshot::microservice(name = "string-error", sys_map = "sys-map.example.com", main = false)]
fn string_error(request: u64) -> Result<Vec<(u64, bool)>, String> {
    if request == 0 {
        return Err("zero is not a request".to_string());
    }
    Ok(vec![(request, true)])
}

fn main() {
    let ok = |name: &str, case: CaseValue| {
        let run = Harness::new(name).invoke(7).unwrap();
        assert_eq!(run.executed.outputs, [(7, case)], "{name}");
        assert!(Harness::new(name).invoke(0).is_err(), "{name} accepted 0");
    };
    ok("any-error", CaseValue::Str("ok".into()));
    ok("anyhow", CaseValue::Int(200));
    ok("io-error", CaseValue::Bool(true));
    ok("own-error", CaseValue::Bool(true));
    ok("string-error", CaseValue::Bool(true));
    ok("opaque-ok", CaseValue::Bool(true));
    let run = Harness::new("io-result").invoke(7).unwrap();
    assert_eq!(run.executed.outputs, [(7, CaseValue::Int(-5))]);
}
