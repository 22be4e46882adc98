//! Client-side encrypted objects through a service, on Garage and on the
//! embedded default: the round trip, what is stored, tampered, truncated and
//! wrong-key objects, plain objects, key rotation, and `objects reencrypt`
//! run as a user runs it.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use serde_json::{json, Value};
use slingshot::storage::encrypt::format::MasterKey;
use slingshot::storage::encrypt::{EncryptedStore, KeyRing, PlainObjects, Sealed};
use slingshot::storage::ObjectStore;
use slingshot::{AnyError, FailureKind, ReadFileFn, ServiceDef, Settings, WriteFileFn};
use slingshot_tests::{read_object, Backend, Fixture};

/// Copies `in` to `out`, upper-cased.
#[slingshot::microservice(name = "sealed-copier", sys_map = "file:unused.json", main = false)]
fn sealed_copier(request: u64, read_file: &ReadFileFn, write_file: &WriteFileFn) -> Result<Vec<(u64, bool)>, AnyError> {
    let mut text = Vec::new();
    read_file("in", request)?.read_to_end(&mut text)?;
    write_file("out", request)?.write_all(&text.to_ascii_uppercase())?;
    Ok(vec![(request, true)])
}

const K1_HEX: &str = "0101010101010101010101010101010101010101010101010101010101010101";
/// Base64 of 32 bytes of 2.
const K2_B64: &str = "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=";

/// A secrets directory holding `enc/k1` (hex) and `enc/k2` (base64).
fn secrets(f: &Fixture) -> PathBuf {
    let dir = f.dir.path().join("secrets");
    std::fs::create_dir_all(dir.join("enc")).unwrap();
    std::fs::write(dir.join("enc/k1"), format!("{K1_HEX}\n")).unwrap();
    std::fs::write(dir.join("enc/k2"), K2_B64).unwrap();
    dir
}

fn settings(f: &Fixture) -> Settings {
    Settings {
        secrets_dir: secrets(f),
        max_attempts: 1,
        ..f.settings()
    }
}

/// An `encrypt` entry over `keys` (IDs k1, k2), writing under `write`.
fn entry(keys: &[&str], write: &str, plain: &str) -> Value {
    let keys: serde_json::Map<String, Value> = keys
        .iter()
        .map(|k| (k.to_string(), json!(format!("enc/{k}"))))
        .collect();
    json!({"keys": keys, "write": write, "plain": plain})
}

/// `sealed-copier` reading `input` and writing `output`, both encrypted by `encrypt`.
fn endpoints(f: &Fixture, input: &str, output: &str, encrypt: Value) -> Value {
    json!({
        "sealed-copier": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("done")]}],
                           "encrypt": {"in": encrypt, "out": encrypt}},
        "sealed-copier/in": input,
        "sealed-copier/out": output,
        // What `objects reencrypt` runs as: a service of a generated binary.
        "writer": {"in": f.q("writer"), "encrypt": {"out": encrypt}},
        "writer/out": output,
    })
}

fn key(n: u8) -> MasterKey {
    MasterKey::from_bytes([n; 32])
}

/// The test's own view of `bucket` through keys `(id, byte)`.
fn sealed_store(raw: &Arc<dyn ObjectStore>, bucket: &str, keys: &[(&str, u8)], write: &str) -> EncryptedStore {
    let ring = KeyRing::new(
        keys.iter().map(|(id, b)| (id.to_string(), key(*b))),
        write,
        PlainObjects::Read,
    )
    .unwrap();
    EncryptedStore::new(raw.clone(), [(bucket.to_string(), ring)])
}

async fn raw(store: &Arc<dyn ObjectStore>, bucket: &str, id: u64) -> Vec<u8> {
    read_object(store, bucket, id)
        .await
        .unwrap_or_else(|| panic!("{bucket}/{id} missing"))
}

async fn decrypted(store: &EncryptedStore, bucket: &str, id: u64) -> Vec<u8> {
    let mut reader = store.open(bucket, &id.to_string()).await.unwrap();
    tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map(|_| out)
    })
    .await
    .unwrap()
    .unwrap()
}

async fn round_trip_and_every_bad_object_fails(backend: Backend) {
    let f = Fixture::new(backend, "enc-trip");
    let (input, output) = (f.bucket("in"), f.bucket("out"));
    let runtime = f
        .runtime_with(
            endpoints(&f, &input, &output, entry(&["k1"], "k1", "reject")),
            settings(&f),
        )
        .await;
    let store = runtime.store().clone();
    let mine = sealed_store(&store, &input, &[("k1", 1)], "k1");
    let secret = b"the secret words".to_vec();
    mine.put_bytes(&input, "1", secret.clone()).await.unwrap();
    // 2: plain; 3: one bit flipped; 4: cut mid-segment; 5: same key ID,
    // other key material; 6: a key ID the ring does not hold.
    store.put_bytes(&input, "2", b"plain".to_vec()).await.unwrap();
    let big = vec![b'x'; 200_000];
    mine.put_bytes(&input, "3", big.clone()).await.unwrap();
    let mut tampered = raw(&store, &input, 3).await;
    let at = tampered.len() / 2;
    tampered[at] ^= 0x01;
    store.put_bytes(&input, "3", tampered.clone()).await.unwrap();
    mine.put_bytes(&input, "4", big.clone()).await.unwrap();
    let whole = raw(&store, &input, 4).await;
    store
        .put_bytes(&input, "4", whole[..whole.len() - 1000].to_vec())
        .await
        .unwrap();
    let other = sealed_store(&store, &input, &[("k1", 9)], "k1");
    other.put_bytes(&input, "5", secret.clone()).await.unwrap();
    let unknown = sealed_store(&store, &input, &[("k9", 1)], "k9");
    unknown.put_bytes(&input, "6", secret.clone()).await.unwrap();

    let results = runtime
        .invoke(ServiceDef::find("sealed-copier").unwrap(), &[1, 2, 3, 4, 5, 6])
        .await
        .unwrap();
    results[0].as_ref().unwrap_or_else(|e| panic!("request 1: {e}"));
    // Stored encrypted, both what the test wrote and what the service wrote.
    for (bucket, plain) in [(&input, &secret), (&output, &secret.to_ascii_uppercase())] {
        let stored = raw(&store, bucket, 1).await;
        assert!(stored.starts_with(b"SLSE"), "{bucket}/1 is not in the encrypted format");
        assert!(
            !stored.windows(8).any(|w| w == &plain[..8]),
            "{bucket}/1 holds its plaintext"
        );
    }
    let outputs = sealed_store(&store, &output, &[("k1", 1)], "k1");
    assert_eq!(decrypted(&outputs, &output, 1).await, b"THE SECRET WORDS");

    let expect = [
        (2, "is not encrypted"),
        (3, "does not authenticate"),
        (4, "does not authenticate"),
        (5, "key \"k1\" is not the key it was written with"),
        (6, "key ID \"k9\", which the key ring does not hold"),
    ];
    for (id, needle) in expect {
        let failure = results[id - 1]
            .as_ref()
            .expect_err("a bad object must fail the request");
        assert_eq!(failure.kind, FailureKind::Storage, "{failure}");
        assert!(!failure.transient, "{failure}");
        assert!(
            failure.message.contains(needle),
            "request {id}: {failure} lacks {needle:?}"
        );
        assert!(failure.message.contains(&format!("{input}/{id}")), "{failure}");
        assert!(!failure.message.contains(K1_HEX) && !failure.message.contains(K2_B64));
        assert_eq!(
            read_object(&store, &output, id as u64).await,
            None,
            "request {id} uploaded output"
        );
    }
}

/// `storage-service writer objects reencrypt out [--dry-run]`, as a user
/// runs it; its exit status and what it printed.
async fn reencrypt(f: &Fixture, sysmap: &str, dry_run: bool) -> (bool, String) {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_storage-service"));
    command
        .args(["writer", "objects", "reencrypt", "out"])
        .args(dry_run.then_some("--dry-run"))
        .env("SLINGSHOT_SYS_MAP", sysmap)
        .env("SLINGSHOT_SECRETS_DIR", f.dir.path().join("secrets"))
        .env("SLINGSHOT_HTTP_ADDR", "off")
        .env("SLINGSHOT_LOG", "warn")
        .stdin(std::process::Stdio::null());
    let output = command.output().await.expect("run storage-service");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

/// The sys-map location of `endpoints` for a service process: a file on the
/// embedded default (the fixture's directory store), the HTTP sys-map on
/// the real services.
async fn location(f: &Fixture, endpoints: Value) -> String {
    match f.backend {
        Backend::Embedded => {
            let doc = json!({
                "backends": {"broker": "memory", "objects": {"dir": f.dir.path().join("objects")},
                             "database": {"sqlite": f.sqlite_path()}},
                "endpoints": endpoints,
            });
            let path = f.dir.path().join(format!("sysmap-{}.json", rand_suffix()));
            std::fs::write(&path, doc.to_string()).unwrap();
            format!("file:{}", path.display())
        }
        _ => f.serve_sysmap(endpoints).await,
    }
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

async fn sealed_under(store: &EncryptedStore, bucket: &str, id: u64) -> Sealed {
    store.sealed(bucket, &id.to_string()).await.unwrap()
}

async fn rotation_and_reencrypt(backend: Backend) {
    let f = Fixture::new(backend, "enc-rotate");
    let (input, output, copies) = (f.bucket("in"), f.bucket("out"), f.bucket("copies"));
    let copier = ServiceDef::find("sealed-copier").unwrap();
    // Key 1 current: requests 1 and 2 write their outputs under k1.
    let v1 = endpoints(&f, &input, &output, entry(&["k1"], "k1", "reject"));
    let runtime = f.runtime_with(v1, settings(&f)).await;
    let store = runtime.store().clone();
    let mine = sealed_store(&store, &input, &[("k1", 1), ("k2", 2)], "k1");
    for (id, text) in [(1, "one"), (2, "two"), (3, "three")] {
        mine.put_bytes(&input, &id.to_string(), text.into()).await.unwrap();
    }
    for result in runtime.invoke(copier, &[1, 2]).await.unwrap() {
        result.unwrap();
    }
    // Key 2 current, key 1 still readable: request 3 reads under k1, writes under k2.
    let v2 = endpoints(&f, &input, &output, entry(&["k1", "k2"], "k2", "reject"));
    let runtime = f.runtime_with(v2.clone(), settings(&f)).await;
    runtime.invoke(copier, &[3]).await.unwrap().remove(0).unwrap();
    // A plain object left from before encryption.
    store.put_bytes(&output, "4", b"legacy".to_vec()).await.unwrap();
    let outputs = sealed_store(&store, &output, &[("k1", 1), ("k2", 2)], "k2");
    assert_eq!(sealed_under(&outputs, &output, 1).await, Sealed::Under("k1".into()));
    assert_eq!(sealed_under(&outputs, &output, 3).await, Sealed::Under("k2".into()));
    assert_eq!(decrypted(&outputs, &output, 1).await, b"ONE");

    // A dry run changes nothing; without the migration flag plain objects stay.
    let sysmap = location(&f, v2).await;
    let (ok, text) = reencrypt(&f, &sysmap, true).await;
    assert!(ok, "{text}");
    assert!(
        text.contains("1 already under k2; would move 2 (2 from k1); 1 plain left; 0 failed"),
        "{text}"
    );
    assert_eq!(sealed_under(&outputs, &output, 1).await, Sealed::Under("k1".into()));

    let v3 = endpoints(&f, &input, &output, entry(&["k1", "k2"], "k2", "read"));
    let sysmap = location(&f, v3).await;
    let (ok, text) = reencrypt(&f, &sysmap, false).await;
    assert!(ok, "{text}");
    assert!(text.contains("4 object(s) in bucket"), "{text}");
    assert!(
        text.contains("1 already under k2; moved 3 (2 from k1, 1 from plain); 0 plain left; 0 failed"),
        "{text}"
    );
    for id in 1..=4 {
        assert_eq!(
            sealed_under(&outputs, &output, id).await,
            Sealed::Under("k2".into()),
            "{output}/{id}"
        );
    }
    // Idempotent.
    let (ok, text) = reencrypt(&f, &sysmap, false).await;
    assert!(
        ok && text.contains("4 already under k2; moved 0; 0 plain left; 0 failed"),
        "{text}"
    );

    // Key 1 removed from the ring, plain objects rejected: everything still reads.
    let v4 = json!({
        "sealed-copier": {"in": f.q("in"), "out": [{"case": true, "queues": [f.q("done")]}],
                           "encrypt": {"in": entry(&["k2"], "k2", "reject"), "out": entry(&["k2"], "k2", "reject")}},
        "sealed-copier/in": output,
        "sealed-copier/out": copies,
    });
    let runtime = f.runtime_with(v4, settings(&f)).await;
    let results = runtime.invoke(copier, &[1, 2, 3, 4]).await.unwrap();
    let copied = sealed_store(&store, &copies, &[("k2", 2)], "k2");
    for (i, (result, text)) in results.iter().zip(["ONE", "TWO", "THREE", "LEGACY"]).enumerate() {
        result.as_ref().unwrap_or_else(|e| panic!("request {}: {e}", i + 1));
        assert_eq!(decrypted(&copied, &copies, i as u64 + 1).await, text.as_bytes());
    }
}

/// A key that is not 32 bytes is a start-up error naming the field and the
/// secret reference, never the value.
async fn a_bad_key_fails_start_up(backend: Backend) {
    let f = Fixture::new(backend, "enc-badkey");
    let dir = secrets(&f);
    std::fs::write(dir.join("enc/k3"), "not-a-key-at-all").unwrap();
    let (input, output) = (f.bucket("in"), f.bucket("out"));
    let runtime = f
        .runtime_with(
            endpoints(&f, &input, &output, entry(&["k3"], "k3", "reject")),
            settings(&f),
        )
        .await;
    let Err(error) = runtime.invoke(ServiceDef::find("sealed-copier").unwrap(), &[1]).await else {
        panic!("a bad key must stop the service");
    };
    let error = error.to_string();
    assert!(
        error.contains("encrypt.in.keys.k3") && error.contains("\"enc/k3\""),
        "{error}"
    );
    assert!(!error.contains("not-a-key-at-all"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_bad_objects_embedded() {
    round_trip_and_every_bad_object_fails(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_trip_and_bad_objects_on_garage() {
    round_trip_and_every_bad_object_fails(Backend::Real).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_reencrypt_embedded() {
    rotation_and_reencrypt(Backend::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_reencrypt_on_garage() {
    rotation_and_reencrypt(Backend::Real).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_fails_start_up_embedded() {
    a_bad_key_fails_start_up(Backend::Embedded).await;
}
