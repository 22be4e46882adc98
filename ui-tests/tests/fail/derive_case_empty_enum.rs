#[derive(slingshot::Case)]
enum Verdict {}

fn main() {}
