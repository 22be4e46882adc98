#[derive(slingshot::Case)]
enum Verdict<const STRICT: bool> {
    Ham,
    Spam,
}

fn main() {}
