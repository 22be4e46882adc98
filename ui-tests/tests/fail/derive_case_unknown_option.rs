#[derive(slingshot::Case)]
enum Verdict {
    #[case(alias = "junk")]
    Spam,
    Ham,
}

fn main() {}
