#[derive(slingshot::Case)]
enum Verdict {
    Ham,
    Spam(f32),
}

fn main() {}
