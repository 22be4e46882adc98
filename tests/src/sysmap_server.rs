//! An HTTP sys-map on loopback that a test can take away and bring back on the same port, to break
//! the sys-map under running services.

use std::net::SocketAddr;
use std::time::Duration;

use slingshot::sysmap::file::FileSysMap;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A sys-map server serving one [`FileSysMap`]. Stopping it closes its
/// listener and every connection to it (idle keep-alive ones included), so
/// clients meet "connection refused" until it is started again.
pub struct SysMapServer {
    map: FileSysMap,
    addr: SocketAddr,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl SysMapServer {
    /// Serves `map` on a free loopback port.
    pub async fn start(map: FileSysMap) -> SysMapServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the sys-map server");
        let addr = listener.local_addr().expect("the sys-map server's address");
        let mut server = SysMapServer {
            map,
            addr,
            running: None,
        };
        server.serve(listener);
        server
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, stopped) = oneshot::channel::<()>();
        let app = slingshot::sysmap::server::router(self.map.clone());
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            let _ = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        });
        self.running = Some((stop, task));
    }

    /// The base URL services use (`SLINGSHOT_SYS_MAP`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Takes the server away: the listener closes and open connections are
    /// closed once their request (if any) is answered. Returns when the
    /// port refuses connections.
    pub async fn stop(&mut self) {
        let Some((stop, task)) = self.running.take() else {
            return;
        };
        let _ = stop.send(());
        tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("the sys-map server did not stop within 10 s")
            .expect("the sys-map server task");
        assert!(
            tokio::net::TcpStream::connect(self.addr).await.is_err(),
            "the stopped sys-map server still accepts connections"
        );
    }

    /// Serves again on the same port.
    pub async fn restart(&mut self) {
        assert!(self.running.is_none(), "the sys-map server is running");
        // The port was ours a moment ago; tokio binds with SO_REUSEADDR, so
        // connections of the old listener in TIME_WAIT do not hold it.
        let listener = tokio::net::TcpListener::bind(self.addr)
            .await
            .unwrap_or_else(|e| panic!("bind the sys-map server again on {}: {e}", self.addr));
        self.serve(listener);
    }
}

impl Drop for SysMapServer {
    fn drop(&mut self) {
        if let Some((stop, task)) = self.running.take() {
            // Connections are served by tasks of their own: the stop signal
            // ends them, aborting the server task alone would not.
            let _ = stop.send(());
            task.abort();
        }
    }
}
