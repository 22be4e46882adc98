//! A service that copies object `request` from `in` to `out` through a 64 KiB
//! buffer, for the large-object test (run as its own process, so its peak
//! RSS can be read from /proc).

use std::io::{Read, Write};

use slingshot::{AnyError, ReadFileFn, WriteFileFn};

#[slingshot::microservice(name = "big-copy", sys_map = "file:unused.json")]
fn copy(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<Vec<(u64, u64)>, AnyError> {
    let mut reader = read_file("in", request)?;
    let mut writer = write_file("out", request)?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        writer.write_all(&buffer[..n])?;
        total += n as u64;
    }
    Ok(vec![(request, total)])
}
