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

/// Waits until `url` answers `want`, or panics after `timeout`; returns the body.
pub async fn wait_status(url: &str, want: u16, timeout: Duration) -> String {
    wait_status_showing(url, want, timeout, String::new).await
}

/// [`wait_status`], whose panic also shows what `show` returns then (the
/// log of the service behind `url`, say).
pub async fn wait_status_showing(url: &str, want: u16, timeout: Duration, show: impl Fn() -> String) -> String {
    let start = Instant::now();
    loop {
        let got = get(url).await;
        if let Some((status, body)) = &got {
            if *status == want {
                return body.clone();
            }
        }
        if start.elapsed() >= timeout {
            let shown = show();
            let gap = if shown.is_empty() { "" } else { "\n" };
            panic!("{url} did not answer {want} within {timeout:?}; last: {got:?}{gap}{shown}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
