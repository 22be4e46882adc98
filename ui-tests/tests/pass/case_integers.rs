// Every integer type is a case variable; several services in one file.
use slingshot::testing::Harness;
use slingshot::CaseValue;

macro_rules! integer_services {
    ($($name:literal => $function:ident: $ty:ty = $value:expr;)*) => {
        $(
            #[slingshot::microservice(name = $name, sys_map = "sys-map.example.com", main = false)]
            fn $function(request: u64) -> Vec<(u64, $ty)> {
                vec![(request, $value)]
            }
        )*
        fn check() {
            $(
                let run = Harness::new($name).invoke(1).unwrap();
                assert_eq!(run.executed.outputs, [(1, CaseValue::Int($value as i128))], $name);
            )*
        }
    };
}

integer_services! {
    "i8" => case_i8: i8 = i8::MIN;
    "i16" => case_i16: i16 = -300;
    "i32" => case_i32: i32 = -70_000;
    "i64" => case_i64: i64 = i64::MIN;
    "i128" => case_i128: i128 = -1;
    "u8" => case_u8: u8 = u8::MAX;
    "u16" => case_u16: u16 = 65_535;
    "u32" => case_u32: u32 = 4_000_000_000;
    "u64" => case_u64: u64 = u64::MAX;
    "u128" => case_u128: u128 = 42;
}

#[slingshot::microservice(name = "isize", sys_map = "sys-map.example.com", main = false)]
fn case_isize(request: u64) -> Vec<(u64, isize)> {
    vec![(request, -2)]
}

#[slingshot::microservice(name = "usize", sys_map = "sys-map.example.com", main = false)]
fn case_usize(request: u64) -> Vec<(u64, usize)> {
    vec![(request, 2)]
}

fn main() {
    check();
    let run = Harness::new("isize").invoke(1).unwrap();
    assert_eq!(run.executed.outputs, [(1, CaseValue::Int(-2))]);
    let run = Harness::new("usize").invoke(1).unwrap();
    assert_eq!(run.executed.outputs, [(1, CaseValue::Int(2))]);
    assert_eq!(slingshot::ServiceDef::all().len(), 12);
}
