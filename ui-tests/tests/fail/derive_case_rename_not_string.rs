#[derive(slingshot::Case)]
enum Verdict {
    #[case(rename = 1)]
    Spam,
    Ham,
}

fn main() {}
