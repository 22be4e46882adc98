//! Talking to a service's operations endpoint from a test: a free port, a GET, and waiting for a status.

use std::time::{Duration, Instant};

/// A TCP port nothing listens on now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The status and body `url` answers, or `None` if it does not answer.
pub async fn get(url: &str) -> Option<(u16, String)> {
    let response = reqwest::get(url).await.ok()?;
    let status = response.status().as_u16();
    Some((status, response.text().await.ok()?))
}

/// Waits until `url` answers `want`, or panics after `timeout`.
pub async fn wait_status(url: &str, want: u16, timeout: Duration) -> String {
    let start = Instant::now();
    loop {
        let got = get(url).await;
        if let Some((status, body)) = &got {
            if *status == want {
                return body.clone();
            }
        }
        assert!(
            start.elapsed() < timeout,
            "{url} did not answer {want} within {timeout:?}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
