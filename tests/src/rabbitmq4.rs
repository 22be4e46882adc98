//! RabbitMQ 4.0 beside the host's 3.10: where `scripts/rabbitmq4.sh` keeps it (its root filesystem
//! and URL), driving it with its own CLI, and which of the two brokers the shared one is.
//!
//! `scripts/rabbitmq4.sh env` exports `SLINGSHOT_TEST_RABBITMQ4_URL` and
//! `SLINGSHOT_TEST_RABBITMQ4_ROOT`. The shared broker of a test run is the
//! one `SLINGSHOT_TEST_AMQP_URL` names: scripts/test.sh's RabbitMQ 4 lane
//! points it at the 4.0 node, so the suites written against "the shared
//! broker" run there unchanged; private nodes and `rabbitmqctl` then follow.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The 4.0 node `scripts/rabbitmq4.sh` starts.
pub const NODE: &str = "rmq4@localhost";

fn required(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: this test needs RabbitMQ 4.0 beside the host's 3.10. Run it in scripts/test.sh's \
             RabbitMQ 4 lane, or: scripts/rabbitmq4.sh start && eval \"$(scripts/rabbitmq4.sh env)\""
        )
    })
}

/// The 4.0 node's AMQP URL (guest/guest, port 5682).
pub fn url() -> String {
    required("SLINGSHOT_TEST_RABBITMQ4_URL")
}

/// The root filesystem RabbitMQ 4.0 runs in (by chroot).
pub fn root() -> PathBuf {
    let root = PathBuf::from(required("SLINGSHOT_TEST_RABBITMQ4_ROOT"));
    assert!(
        root.join("proc/self").exists(),
        "{} has no /proc mounted: its node is not running; run scripts/rabbitmq4.sh start",
        root.display()
    );
    root
}

/// Whether the shared broker (`SLINGSHOT_TEST_AMQP_URL`) is the 4.0 node.
pub fn shared_is_rabbitmq4() -> bool {
    match (
        std::env::var("SLINGSHOT_TEST_AMQP_URL"),
        std::env::var("SLINGSHOT_TEST_RABBITMQ4_URL"),
    ) {
        (Ok(shared), Ok(four)) => shared == four,
        _ => false,
    }
}

/// A command in the root filesystem, with a clean environment.
pub fn in_root(program: &str) -> Command {
    in_root_at(&root(), program)
}

/// [`in_root`] in the root filesystem at `root` (no check that it is ready).
pub fn in_root_at(root: &Path, program: &str) -> Command {
    let mut command = Command::new("chroot");
    command
        .arg(root)
        .args([
            "env",
            "-i",
            "PATH=/usr/sbin:/usr/bin:/sbin:/bin",
            "HOME=/root",
            "LANG=C.UTF-8",
        ])
        .arg(program);
    command
}

/// `rabbitmqctl -n NODE` of RabbitMQ 4.0 (the host's 3.10 CLI cannot talk
/// to its nodes).
pub fn rabbitmqctl(node: &str) -> Command {
    let mut command = in_root("rabbitmqctl");
    command.args(["-n", node]);
    command
}

/// `rabbitmqctl` for the shared broker: the host's, or the 4.0 node's.
pub fn shared_rabbitmqctl() -> Command {
    if shared_is_rabbitmq4() {
        rabbitmqctl(NODE)
    } else {
        Command::new("rabbitmqctl")
    }
}
