//! The services measured, and the set-up of their data.
//!
//! The objects to read, the table to insert into, the processes whose
//! memory is read.

use std::io::{Read, Write};
use std::time::Duration;

use diesel::PgConnection;
use serde_json::json;
use slingshot::storage::s3::S3Store;
use slingshot::storage::ObjectStore;
use slingshot::{AnyError, ReadFileFn, WriteFileFn};
use slingshot_tests::Fixture;

/// One output per input, nothing else.
#[slingshot::microservice(name = "bench-noop", sys_map = "file:unused.json", main = false)]
fn noop(request: u64) -> [(u64, bool); 1] {
    [(request, true)]
}

/// Reads object `request` (1 MiB) and writes it back out.
#[slingshot::microservice(name = "bench-file", sys_map = "file:unused.json", main = false)]
fn file(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<[(u64, bool); 1], AnyError> {
    let mut bytes = Vec::with_capacity(1 << 20);
    read_file("in", request)?.read_to_end(&mut bytes)?;
    write_file("out", request)?.write_all(&bytes)?;
    Ok([(request, true)])
}

/// `bench-file`, writing what it read with its first 16 bytes replaced by
/// the request and the time, as a stage's output usually differs from its
/// input: a store that keeps identical blocks once cannot skip storing it.
#[slingshot::microservice(name = "bench-file-stamped", sys_map = "file:unused.json", main = false)]
fn file_stamped(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<[(u64, bool); 1], AnyError> {
    let mut bytes = Vec::with_capacity(1 << 20);
    read_file("in", request)?.read_to_end(&mut bytes)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64;
    for (at, value) in [(0, request), (8, now)] {
        if let Some(field) = bytes.get_mut(at..at + 8) {
            field.copy_from_slice(&value.to_le_bytes());
        }
    }
    write_file("out", request)?.write_all(&bytes)?;
    Ok([(request, true)])
}

/// One INSERT per request.
#[slingshot::microservice(name = "bench-db", sys_map = "file:unused.json", main = false)]
fn db(request: u64, connection: &mut PgConnection) -> Result<[(u64, bool); 1], AnyError> {
    use diesel::RunQueryDsl;
    diesel::sql_query("INSERT INTO bench_rows (id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind::<diesel::sql_types::BigInt, _>(i64::try_from(request)?)
        .execute(connection)?;
    Ok([(request, true)])
}

/// `bench-db` in once mode: the same INSERT, in the stage's transaction
/// with its inbox record and outbox row.
#[slingshot::microservice(name = "bench-once", sys_map = "file:unused.json", main = false, once = true)]
fn once(request: u64, connection: &mut PgConnection) -> Result<[(u64, bool); 1], AnyError> {
    db(request, connection)
}

/// Streams object `request` from `in` to `out` through a 64 KiB buffer.
#[slingshot::microservice(name = "bench-copy", sys_map = "file:unused.json", main = false)]
fn copy(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<[(u64, bool); 1], AnyError> {
    let mut reader = read_file("in", request)?;
    let mut writer = write_file("out", request)?;
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        writer.write_all(&buffer[..n])?;
    }
    Ok([(request, true)])
}

/// Writes objects `0..n` of `size` bytes, all alike: a repeating pattern,
/// which a store may compress, and of which it may keep one copy (Garage
/// keeps each distinct 1 MiB block once).
pub async fn seed_objects(s3: &dyn ObjectStore, bucket: &str, n: u64, size: usize) -> anyhow::Result<()> {
    let body: Vec<u8> = (0..size).map(|i| (i * 31 % 251) as u8).collect();
    seed(s3, bucket, n, |_| body.clone()).await
}

/// Writes objects `0..n` of `size` bytes, each its own bytes that look
/// random, as ciphertext does: the store can neither compress them nor keep
/// one copy for several.
pub async fn seed_unique_objects(s3: &dyn ObjectStore, bucket: &str, n: u64, size: usize) -> anyhow::Result<()> {
    seed(s3, bucket, n, |id| {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03);
        (0..size)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    })
    .await
}

async fn seed(s3: &dyn ObjectStore, bucket: &str, n: u64, body: impl Fn(u64) -> Vec<u8>) -> anyhow::Result<()> {
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(8) {
        futures::future::try_join_all(chunk.iter().map(|&id| {
            let body = body(id);
            async move { s3.put_bytes(bucket, &id.to_string(), body).await }
        }))
        .await?;
    }
    Ok(())
}

/// Empties the table the database stage inserts into (creating it first),
/// before the stage starts: its requests never create it.
pub async fn prepare_table(url: &str) -> anyhow::Result<()> {
    let url = url.to_string();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        use diesel::{Connection, RunQueryDsl};
        let mut c = PgConnection::establish(&url)?;
        diesel::sql_query("CREATE TABLE IF NOT EXISTS bench_rows (id BIGINT PRIMARY KEY)").execute(&mut c)?;
        diesel::sql_query("TRUNCATE bench_rows").execute(&mut c)?;
        Ok(())
    })
    .await?
}

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Memory of service processes, in MiB.
pub struct Memory {
    /// Copying a 1 GiB object.
    pub copy_peak: CopyPeak,
    /// The same through an encrypted bucket reference.
    pub encrypted_copy_peak: CopyPeak,
    /// RSS of an idle, consuming service.
    pub idle: f64,
    /// Of which anonymous memory (heap and stacks), the rest being the
    /// executable's code mapped from disk.
    pub idle_anonymous: f64,
    /// Threads of the idle service.
    pub idle_threads: u64,
}

/// The most a service process held while copying a 1 GiB object.
pub struct CopyPeak {
    /// Peak RSS (VmHWM) in MiB.
    pub rss: f64,
    /// The most threads it had at once (sampled every 20 ms).
    pub threads: u64,
}

/// Copies a 1 GiB object through a service process and returns its peak RSS
/// and thread count, sampled every 20 ms. `service` runs one service whose
/// sys-map, `sysmap`, maps its `in` and `out` to `bucket`; `invoke KEY` is
/// appended. The object is uploaded (through a file in the fixture's
/// directory) first and deleted afterwards.
pub async fn gib_copy_peak(
    f: &Fixture,
    s3: &S3Store,
    seed: &dyn ObjectStore,
    bucket: &str,
    key: u64,
    mut service: tokio::process::Command,
    sysmap: &str,
) -> anyhow::Result<CopyPeak> {
    const GIB: u64 = 1 << 30;
    let path = f.dir.path().join(format!("huge-{key}"));
    let p = path.clone();
    tokio::task::spawn_blocking(move || -> std::io::Result<()> {
        let mut file = std::io::BufWriter::new(std::fs::File::create(&p)?);
        let chunk: Vec<u8> = (0..1 << 20).map(|i: usize| (i * 7 % 253) as u8).collect();
        for _ in 0..GIB >> 20 {
            file.write_all(&chunk)?;
        }
        file.flush()
    })
    .await??;
    seed.put_file(bucket, &key.to_string(), &path).await?;
    std::fs::remove_file(&path)?;
    let mut child = service
        .args(["invoke", &key.to_string()])
        .env("SLINGSHOT_SYS_MAP", sysmap)
        .env("SLINGSHOT_STAGING_DIR", f.staging_dir())
        .env("SLINGSHOT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let pid = child.id().unwrap_or(0);
    let (mut peak, mut threads) = (0, 0);
    let status = loop {
        peak = peak.max(status_kib(pid, "VmHWM:").unwrap_or(0));
        threads = threads.max(status_kib(pid, "Threads:").unwrap_or(0));
        if let Ok(status) = tokio::time::timeout(Duration::from_millis(20), child.wait()).await {
            break status?;
        }
    };
    anyhow::ensure!(status.success(), "the 1 GiB copy failed: {status}");
    let _ = s3
        .client()
        .delete_object()
        .bucket(bucket)
        .key(key.to_string())
        .send()
        .await;
    Ok(CopyPeak {
        rss: peak as f64 / 1024.0,
        threads,
    })
}

/// The key of the encrypted benchmarks (a fixed test key), and the
/// environment variable its secret ref `bench/objects` resolves from.
pub const BENCH_KEY: &str = "4242424242424242424242424242424242424242424242424242424242424242";
pub const BENCH_KEY_VAR: &str = "SLINGSHOT_SECRET_BENCH_OBJECTS";

/// The sys-map `encrypt` entry of an encrypted benchmark bucket.
pub fn encrypt_entry() -> serde_json::Value {
    json!({"keys": {"bench": "bench/objects"}, "write": "bench"})
}

/// `s3` encrypting `bucket` under the benchmark key.
pub fn encrypted_store(s3: &S3Store, bucket: &str) -> slingshot::storage::encrypt::EncryptedStore {
    use slingshot::storage::encrypt::{format::MasterKey, EncryptedStore, KeyRing, PlainObjects};
    let key = MasterKey::parse(BENCH_KEY).expect("benchmark key");
    let ring = KeyRing::new([("bench".to_string(), key)], "bench", PlainObjects::Reject).expect("benchmark ring");
    EncryptedStore::new(std::sync::Arc::new(s3.clone()), [(bucket.to_string(), ring)])
}

/// Runs the 1 GiB copy and an idle service in their own processes.
pub async fn memory(f: &Fixture, s3: &S3Store, bucket: &str) -> anyhow::Result<Memory> {
    let sysmap = f
        .serve_sysmap(json!({
            "bench-copy": {"in": f.q("copy-in"), "out": []},
            "bench-copy/in": bucket, "bench-copy/out": bucket,
            "bench-noop": {"in": f.q("idle-in"), "out": []},
        }))
        .await;
    let exe = std::env::current_exe()?;
    let mut copy = tokio::process::Command::new(&exe);
    copy.args(["service", "bench-copy"]);
    let copy_peak = gib_copy_peak(f, s3, s3, bucket, 1_000_000, copy, &sysmap).await?;

    let mut idle = tokio::process::Command::new(&exe)
        .args(["service", "bench-noop", "run"])
        .env("SLINGSHOT_SYS_MAP", &sysmap)
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .env("SLINGSHOT_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let pid = idle.id().unwrap_or(0);
    let (rss, anonymous, threads) = (
        status_kib(pid, "VmRSS:").unwrap_or(0),
        status_kib(pid, "RssAnon:").unwrap_or(0),
        status_kib(pid, "Threads:").unwrap_or(0),
    );
    idle.kill().await?;

    // The same copy through an encrypted bucket reference: the object is
    // seeded encrypted, read decrypting and written encrypting.
    let encrypted = encrypted_store(s3, bucket);
    let sysmap = f
        .serve_sysmap(json!({
            "bench-copy": {"in": f.q("copy-in"), "out": [], "encrypt": {"in": encrypt_entry(), "out": encrypt_entry()}},
            "bench-copy/in": bucket, "bench-copy/out": bucket,
        }))
        .await;
    let mut copy = tokio::process::Command::new(&exe);
    copy.args(["service", "bench-copy"]).env(BENCH_KEY_VAR, BENCH_KEY);
    let encrypted_copy_peak = gib_copy_peak(f, s3, &encrypted, bucket, 1_000_001, copy, &sysmap).await?;
    let mib = |kib: u64| kib as f64 / 1024.0;
    Ok(Memory {
        copy_peak,
        encrypted_copy_peak,
        idle: mib(rss),
        idle_anonymous: mib(anonymous),
        idle_threads: threads,
    })
}
