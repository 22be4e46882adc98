//! A service process of a test, started, watched and ended one way: [`ServiceProcess`], its signals and its log.
//!
//! A test starts a service binary with [`ServiceProcess::spawn`] (as
//! [`crate::service_command`] sets it up, its output appended to
//! `dir/NAME.log`), checks on it while a stream runs, and ends it with
//! [`ServiceProcess::stop`] (SIGTERM: it must exit 0 within [`STOP_WITHIN`])
//! or [`ServiceProcess::kill`] (SIGKILL). Only test files see
//! `env!("CARGO_BIN_EXE_...")`, so they pass the binary's path.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

use tokio::process::{Child, Command};

use crate::{service_command, signal};

/// `SIGTERM`: stop gracefully.
pub const SIGTERM: i32 = 15;
/// `SIGKILL`: die at once.
pub const SIGKILL: i32 = 9;
/// `SIGSTOP`: freeze (Linux's number).
pub const SIGSTOP: i32 = 19;
/// `SIGCONT`: thaw what `SIGSTOP` froze (Linux's number).
pub const SIGCONT: i32 = 18;

/// How long a service gets to exit after SIGTERM.
pub const STOP_WITHIN: Duration = Duration::from_secs(60);

/// What the log of a service that lost its broker connection says.
pub const RECONNECT_LINES: [&str; 4] = [
    "AMQP connection lost",
    "giving up on the AMQP connection",
    "consumer stopped; resuming",
    "cannot connect",
];

/// A running service process called `name` (its first argument, as a rule),
/// whose log is `dir/NAME.log`.
pub struct ServiceProcess {
    name: String,
    dir: PathBuf,
    child: Child,
}

impl ServiceProcess {
    /// Starts `binary NAME` as [`service_command`] sets it up: the sys-map
    /// at `sysmap`, staging and the log in `dir`, then `env`.
    pub fn spawn(binary: &str, name: &str, sysmap: &str, dir: &Path, env: &[(&str, String)]) -> ServiceProcess {
        ServiceProcess::start(service_command(binary, name, sysmap, dir, env), name, dir)
    }

    /// Starts `command`, a service called `name` whose log, if it keeps one,
    /// is `dir/NAME.log`: for what [`ServiceProcess::spawn`] does not set up
    /// (pipes, variables taken away, another program).
    pub fn start(mut command: Command, name: &str, dir: &Path) -> ServiceProcess {
        let child = command.spawn().unwrap_or_else(|e| {
            let program = command.as_std().get_program().to_string_lossy().into_owned();
            panic!("start {program} {name}: {e}")
        });
        ServiceProcess {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            child,
        }
    }

    /// What it logged so far (`dir/NAME.log`; empty if there is none).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join(format!("{}.log", self.name))).unwrap_or_default()
    }

    /// Its process ID; panics once it was reaped.
    pub fn pid(&self) -> u32 {
        self.child
            .id()
            .unwrap_or_else(|| panic!("{} is not running: it has no pid", self.name))
    }

    /// The child process itself (to take its pipes, say).
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// How it exited, if it did.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Panics, showing the log, if it exited.
    pub fn assert_running(&mut self) {
        if let Some(status) = self.exited() {
            panic!("{} exited on its own with {status}:\n{}", self.name, self.log());
        }
    }

    /// Panics, showing the log, if it exited or its log shows that it lost
    /// its broker connection (any of [`RECONNECT_LINES`]).
    pub fn assert_kept_its_connection(&mut self) {
        self.assert_running();
        let log = self.log();
        for line in RECONNECT_LINES {
            assert!(
                !log.contains(line),
                "{} lost its connection ({line:?}):\n{log}",
                self.name
            );
        }
    }

    /// SIGTERM; it must exit 0 within [`STOP_WITHIN`]. Returns its whole log.
    pub async fn stop(mut self) -> String {
        let status = self.terminate().await;
        let log = self.log();
        assert!(
            status.success(),
            "{} exited with {status} after SIGTERM:\n{log}",
            self.name
        );
        log
    }

    /// SIGTERM; it must exit within [`STOP_WITHIN`], with any status.
    /// Returns the status and its whole log.
    pub async fn stop_status(mut self) -> (ExitStatus, String) {
        let status = self.terminate().await;
        (status, self.log())
    }

    /// SIGKILL, and wait until it is gone.
    pub async fn kill(mut self) {
        signal(self.pid(), SIGKILL);
        if let Err(e) = self.child.wait().await {
            panic!("waiting for the killed {}: {e}", self.name);
        }
    }

    async fn terminate(&mut self) -> ExitStatus {
        signal(self.pid(), SIGTERM);
        match tokio::time::timeout(STOP_WITHIN, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("waiting for {} after SIGTERM: {e}", self.name),
            Err(_) => panic!(
                "{} did not stop within {STOP_WITHIN:?} of SIGTERM:\n{}",
                self.name,
                self.log()
            ),
        }
    }
}
