#[derive(slingshot::Case)]
struct Verdict {
    spam: bool,
}

fn main() {}
