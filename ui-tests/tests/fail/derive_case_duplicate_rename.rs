#[derive(slingshot::Case)]
enum Verdict {
    #[case(rename = "junk")]
    Spam,
    #[case(rename = "junk")]
    Phishing,
    Ham,
}

fn main() {}
