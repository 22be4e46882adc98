//! Compile-time contract of `#[slingshot::microservice]` and `#[derive(slingshot::Case)]`:
//! every accepted form compiles, every misuse fails with the message in its `.stderr`.

#[test]
fn pass() {
    trybuild::TestCases::new().pass("tests/pass/*.rs");
}

#[test]
fn fail() {
    trybuild::TestCases::new().compile_fail("tests/fail/*.rs");
}
