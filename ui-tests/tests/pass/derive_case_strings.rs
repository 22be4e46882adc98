// A derived enum routes by variant name, or by its rename.
use slingshot::testing::Harness;
use slingshot::{Case, CaseDomain, CaseValue};

#[derive(slingshot::Case, Clone, Copy, Debug)]
enum Verdict {
    Accepted,
    #[case(rename = "spam")]
    Junk,
    /// Documented variants keep their docs.
    #[case(rename = "needs review")]
    Review,
}

#[slingshot::microservice(name = "moderator", sys_map = "sys-map.example.com", main = false)]
fn process(request: u64) -> Vec<(u64, Verdict)> {
    vec![(request, Verdict::Accepted), (request + 1, Verdict::Junk)]
}

fn main() {
    assert_eq!(Verdict::Accepted.to_case(), CaseValue::Str("Accepted".into()));
    assert_eq!(Verdict::Junk.to_case(), CaseValue::Str("spam".into()));
    assert_eq!(Verdict::Review.to_case(), CaseValue::Str("needs review".into()));
    assert_eq!(
        Verdict::domain(),
        CaseDomain::OneOf(vec![
            CaseValue::Str("Accepted".into()),
            CaseValue::Str("spam".into()),
            CaseValue::Str("needs review".into()),
        ])
    );
    let run = Harness::new("moderator")
        .route(Verdict::Junk, &["bin"])
        .invoke(1)
        .unwrap();
    assert_eq!(run.routes, [("bin".to_string(), 2)]);
}
