//! Services the object-storage fault tests (`tests/tests/faults_storage.rs`) run: `storage-service NAME [run|...]`.
//!
//! - `rereader` reads 16 bytes of object `request % 2` of `in`, opens it
//!   again while the first reader is still open, and reads 16 bytes more.
//! - `writer` writes a small object per request to `out`, and to `side` as
//!   well for IDs ending in 7.
//! - `big-writer` writes `SLINGSHOT_TEST_OBJECT_MB` MiB (default 64) of a
//!   pattern derived from the ID to `out`.

use std::io::{Read, Write};
use std::process::ExitCode;

use slingshot::{AnyError, ReadFileFn, WriteFileFn};
use slingshot_tests::storage::pattern;

/// Reads twice from the start of one large object, the second reader opened
/// while the first is only partly read.
#[slingshot::microservice(name = "rereader", sys_map = "file:unused.json", main = false)]
fn rereader(request: u64, read_file: &ReadFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    let object = request % 2;
    let mut first = read_file("in", object)?;
    let mut head = [0u8; 16];
    first.read_exact(&mut head)?;
    let mut second = read_file("in", object)?;
    let mut again = [0u8; 16];
    second.read_exact(&mut again)?;
    if head != again {
        return Err(format!("object {object} read differently twice: {head:?} then {again:?}").into());
    }
    drop(first);
    Ok(vec![(request, true)])
}

/// Writes one small object per request (and one to `side` for IDs ending in 7).
#[slingshot::microservice(name = "writer", sys_map = "file:unused.json", main = false)]
fn writer(request: u64, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    write!(write_file("out", request)?, "object {request}")?;
    if request % 10 == 7 {
        write!(write_file("side", request)?, "side object {request}")?;
    }
    Ok(vec![(request, true)])
}

/// Writes one large object, staged on disk and uploaded in parts.
#[slingshot::microservice(name = "big-writer", sys_map = "file:unused.json", main = false)]
fn big_writer(request: u64, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    let mib: u64 = std::env::var("SLINGSHOT_TEST_OBJECT_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let mut out = write_file("out", request)?;
    let mut chunk = vec![0u8; 1 << 20];
    for block in 0..mib {
        for (i, byte) in chunk.iter_mut().enumerate() {
            *byte = pattern(request, (block << 20) + i as u64);
        }
        out.write_all(&chunk)?;
    }
    drop(out);
    Ok(vec![(request, true)])
}

fn main() -> ExitCode {
    slingshot_tests::run_named_service("storage-service (rereader|writer|big-writer) [run|...]")
}
