// `#[case(int)]` routes by discriminant, implicit or explicit.
use slingshot::{Case, CaseDomain, CaseValue};

#[derive(slingshot::Case)]
#[case(int)]
enum Priority {
    Low = 1,
    Normal,
    High = 10,
    Urgent = -1,
}

#[derive(slingshot::Case)]
#[case(int)]
#[repr(u8)]
#[allow(dead_code)]
enum Level {
    Zero,
    One,
}

#[slingshot::microservice(name = "triage", sys_map = "sys-map.example.com", main = false)]
fn process(request: u64) -> Result<Vec<(u64, Priority)>, slingshot::AnyError> {
    Ok(vec![(request, Priority::High)])
}

fn main() {
    assert_eq!(Priority::Low.to_case(), CaseValue::Int(1));
    assert_eq!(Priority::Normal.to_case(), CaseValue::Int(2));
    assert_eq!(Priority::High.to_case(), CaseValue::Int(10));
    assert_eq!(Priority::Urgent.to_case(), CaseValue::Int(-1));
    assert_eq!(Level::One.to_case(), CaseValue::Int(1));
    assert_eq!(
        Level::domain(),
        CaseDomain::OneOf(vec![CaseValue::Int(0), CaseValue::Int(1)])
    );
    let run = slingshot::testing::Harness::new("triage").invoke(4).unwrap();
    assert_eq!(run.executed.outputs, [(4, CaseValue::Int(10))]);
}
