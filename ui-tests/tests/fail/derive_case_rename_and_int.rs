#[derive(slingshot::Case)]
#[case(int)]
enum Priority {
    Low = 1,
    #[case(rename = "high")]
    High = 2,
}

fn main() {}
