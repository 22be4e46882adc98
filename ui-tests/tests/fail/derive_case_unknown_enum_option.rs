#[derive(slingshot::Case)]
#[case(integer)]
enum Priority {
    Low = 1,
    High = 2,
}

fn main() {}
