//! (b) A binary classifier: routes each document by a bool, "does it mention
//! slingshot?". `false` and `true` go to different queues.

use slingshot::{AnyError, ReadFileFn};
use std::io::Read;

#[slingshot::microservice(name = "binary-classification", sys_map = "file:examples/sysmaps/classifier.json")]
fn classify(request: u64, read_file: &ReadFileFn) -> Result<[(u64, bool); 1], AnyError> {
    let mut text = String::new();
    read_file("in", request)?.read_to_string(&mut text)?;
    Ok([(request, text.to_lowercase().contains("slingshot"))])
}
