//! Helpers of the object-storage fault tests: the large objects `storage-service big-writer`
//! writes, and a watch that polls a service's `/healthz` throughout a test.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The byte at `offset` of object `request` as `storage-service big-writer`
/// writes it (and as tests seed large inputs).
pub fn pattern(request: u64, offset: u64) -> u8 {
    (offset.wrapping_mul(31).wrapping_add(request) % 251) as u8
}

/// `size` bytes of [`pattern`] for object `request`.
pub fn patterned(request: u64, size: usize) -> Vec<u8> {
    (0..size as u64).map(|offset| pattern(request, offset)).collect()
}

/// How long one `/healthz` answer may take.
pub const HEALTH_DEADLINE: Duration = Duration::from_secs(1);

/// Polls `GET /healthz` of a service's ops endpoint every 200 ms in the
/// background, each request bounded by [`HEALTH_DEADLINE`], and keeps what
/// went wrong.
pub struct HealthWatch {
    failures: Arc<Mutex<Vec<String>>>,
    polls: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthWatch {
    /// Waits (up to `ready_within`) for the first 200 from `port`, then
    /// starts polling.
    pub async fn start(port: u16, ready_within: Duration) -> HealthWatch {
        let url = format!("http://127.0.0.1:{port}/healthz");
        crate::probe::wait_status(&url, 200, ready_within).await;
        let client = reqwest::Client::builder()
            .timeout(HEALTH_DEADLINE)
            .build()
            .expect("an HTTP client");
        let failures: Arc<Mutex<Vec<String>>> = Arc::default();
        let polls: Arc<std::sync::atomic::AtomicU64> = Arc::default();
        let (seen, count) = (failures.clone(), polls.clone());
        let task = tokio::spawn(async move {
            loop {
                let asked = Instant::now();
                let answer = client.get(&url).send().await;
                let took = asked.elapsed();
                let failure = match answer {
                    Ok(r) if r.status().is_success() && took <= HEALTH_DEADLINE => None,
                    Ok(r) => Some(format!("{} after {took:?}", r.status())),
                    Err(e) => Some(format!("{e} after {took:?}")),
                };
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(failure) = failure {
                    seen.lock().unwrap().push(failure);
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        HealthWatch { failures, polls, task }
    }

    /// Panics if any poll so far failed or took longer than [`HEALTH_DEADLINE`].
    pub fn assert_healthy(&self, what: &str) {
        let failures = self.failures.lock().unwrap();
        assert!(
            failures.is_empty(),
            "/healthz did not answer within {HEALTH_DEADLINE:?} {what}: {} of {} polls failed, first: {:?}",
            failures.len(),
            self.polls.load(std::sync::atomic::Ordering::Relaxed),
            failures.first()
        );
    }

    /// Polls so far.
    pub fn polls(&self) -> u64 {
        self.polls.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for HealthWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}
