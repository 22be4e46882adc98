// A return type spelled through an alias is what it stands for: a `Result`
// under any name fails with its error, plain outputs under any name are
// outputs. The macro cannot see through an alias; rustc decides.
use slingshot::testing::Harness;
use slingshot::{AnyError, CaseValue};

type Out = Result<Vec<(u64, bool)>, AnyError>;

#[slingshot::microservice(name = "alias", sys_map = "sys-map.example.com", main = false)]
fn alias(request: u64) -> Out {
    if request == 0 {
        return Err("zero is not a request".into());
    }
    Ok(vec![(request, true)])
}

#[derive(Debug)]
struct MyError(u64);

impl std::fmt::Display for MyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot handle {}", self.0)
    }
}

impl std::error::Error for MyError {}

type MyResult<T> = Result<T, MyError>;

#[slingshot::microservice(name = "generic-alias", sys_map = "sys-map.example.com", main = false)]
fn generic_alias(request: u64) -> MyResult<Option<(u64, i32)>> {
    if request == 0 {
        return Err(MyError(request));
    }
    Ok(Some((request, -1)))
}

#[slingshot::microservice(name = "anyhow-alias", sys_map = "sys-map.example.com", main = false)]
fn anyhow_alias(request: u64) -> anyhow::Result<Vec<(u64, bool)>> {
    anyhow::ensure!(request != 0, "zero is not a request");
    Ok(vec![(request, false)])
}

mod outputs {
    pub type Plain = Vec<(u64, &'static str)>;
    pub type Fallible<C> = std::result::Result<C, std::io::Error>;
}

#[slingshot::microservice(name = "plain-alias", sys_map = "sys-map.example.com", main = false)]
fn plain_alias(request: u64) -> outputs::Plain {
    vec![(request, "plain")]
}

#[slingshot::microservice(name = "nested-alias", sys_map = "sys-map.example.com", main = false)]
fn nested_alias(request: u64) -> outputs::Fallible<outputs::Plain> {
    if request == 0 {
        return Err(std::io::Error::other("zero is not a request"));
    }
    Ok(vec![(request, "nested")])
}

fn main() {
    let ok = |name: &str, case: CaseValue| {
        let run = Harness::new(name).invoke(7).unwrap();
        assert_eq!(run.executed.outputs, [(7, case)], "{name}");
        let failed = Harness::new(name).invoke(0);
        assert!(failed.is_err(), "{name} treated its error as no outputs");
    };
    ok("alias", CaseValue::Bool(true));
    ok("generic-alias", CaseValue::Int(-1));
    ok("anyhow-alias", CaseValue::Bool(false));
    ok("nested-alias", CaseValue::Str("nested".into()));
    let run = Harness::new("plain-alias").invoke(7).unwrap();
    assert_eq!(run.executed.outputs, [(7, CaseValue::Str("plain".into()))]);
}
