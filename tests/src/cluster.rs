//! The three-node RabbitMQ cluster `scripts/cluster.sh` starts for the cluster fault tests: finding
//! its nodes, and killing, freezing, stopping and restarting them.
//!
//! The cluster is started once per test run (scripts/test.sh starts it in
//! the background while the tests build, and stops it when the run ends).
//! A test that breaks a node brings it back before it ends, pass or fail
//! ([`Cluster::heal`], also run when the cluster handle is dropped), so the
//! next test finds three running nodes.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{SIGCONT, SIGKILL, SIGSTOP};

/// One node of the cluster.
#[derive(Debug, Clone)]
pub struct Node {
    /// Erlang node name, `slingshot-c1@localhost`.
    pub name: String,
    /// AMQP port on 127.0.0.1.
    pub port: u16,
    /// Its directory: `start`, `pid`, logs.
    pub dir: PathBuf,
}

/// The running cluster.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<Node>,
}

fn ctl(node: &str, args: &[&str]) -> Result<String, String> {
    let output = Command::new("rabbitmqctl")
        .args(["-q", "-n", node])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("rabbitmqctl: {e}"))?;
    match output.status.success() {
        true => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        false => Err(format!(
            "rabbitmqctl -n {node} {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )),
    }
}

impl Cluster {
    /// The cluster of this test run. Waits (blocking) until
    /// `scripts/cluster.sh start` says it is ready; panics, saying how to
    /// start it, if the run has none or it failed to start.
    pub fn get() -> Cluster {
        let dir = PathBuf::from(std::env::var("SLINGSHOT_TEST_CLUSTER_DIR").expect(
            "SLINGSHOT_TEST_CLUSTER_DIR: run the tests with scripts/test.sh, or start a cluster with \
             `scripts/cluster.sh start` and export SLINGSHOT_TEST_CLUSTER_DIR=/var/tmp/slingshot-cluster",
        ));
        let start = Instant::now();
        while !dir.join("ready").exists() {
            if let Ok(why) = std::fs::read_to_string(dir.join("failed")) {
                panic!("the test cluster did not start: {why}");
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "the test cluster in {} was not ready within 300 s",
                dir.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let env = std::fs::read_to_string(dir.join("env")).expect("the cluster's env file");
        let line = env
            .lines()
            .find_map(|l| l.strip_prefix("export SLINGSHOT_TEST_CLUSTER_NODES="))
            .expect("SLINGSHOT_TEST_CLUSTER_NODES in the cluster's env file");
        let nodes = line
            .trim_matches('\'')
            .split(',')
            .enumerate()
            .map(|(i, node)| {
                let (name, port) = node.split_once('=').expect("NAME=PORT");
                Node {
                    name: name.to_string(),
                    port: port.parse().expect("a port"),
                    dir: dir.join(format!("c{}", i + 1)),
                }
            })
            .collect();
        let cluster = Cluster { nodes };
        cluster.heal();
        cluster
    }

    /// `amqp://guest:guest@127.0.0.1:PORT/%2f` of node `i`.
    pub fn amqp_url(&self, i: usize) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", self.nodes[i].port)
    }

    /// The sys-map `rabbitmq` endpoint listing the nodes in `order`.
    pub fn endpoint(&self, order: &[usize]) -> serde_json::Value {
        let hosts: Vec<&str> = order.iter().map(|_| "127.0.0.1").collect();
        let ports: Vec<u16> = order.iter().map(|&i| self.nodes[i].port).collect();
        serde_json::json!({"host": hosts, "port": ports, "username": ["guest"], "pass": ["test/rabbitmq"]})
    }

    /// The Erlang VM's pid of node `i`, if it runs.
    fn pid(&self, i: usize) -> Option<u32> {
        std::fs::read_to_string(self.nodes[i].dir.join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
            .filter(|&pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
    }

    fn signal(&self, i: usize, signal: i32) {
        let pid = self
            .pid(i)
            .unwrap_or_else(|| panic!("node {} is not running", self.nodes[i].name));
        crate::signal(pid, signal);
    }

    /// `kill -9` of node `i`.
    pub fn kill(&self, i: usize) {
        self.signal(i, SIGKILL);
        let start = Instant::now();
        while self.pid(i).is_some() && start.elapsed() < Duration::from_secs(10) {
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Freezes node `i` (SIGSTOP): it keeps its sockets open and answers nothing.
    pub fn freeze(&self, i: usize) {
        self.signal(i, SIGSTOP);
    }

    /// Lets a frozen node run again (SIGCONT).
    pub fn thaw(&self, i: usize) {
        self.signal(i, SIGCONT);
    }

    /// Stops node `i` gracefully (`rabbitmqctl stop`).
    pub fn stop(&self, i: usize) {
        if let Err(e) = ctl(&self.nodes[i].name, &["-t", "60", "stop"]) {
            panic!("{e}");
        }
    }

    /// Starts node `i` again and waits until it runs; it rejoins the cluster.
    pub fn start(&self, i: usize) {
        let node = &self.nodes[i];
        // `setsid --fork` returns at once, leaving the node in a session of
        // its own: it outlives the test, and scripts/cluster.sh stops it.
        let forked = Command::new("setsid")
            .arg("--fork")
            .arg(node.dir.join("start"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("start {}: {e}", node.name));
        assert!(forked.success(), "setsid --fork {}: {forked}", node.name);
        let start = Instant::now();
        while ctl(&node.name, &["-t", "30", "await_startup"]).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "{} did not start again within 120 s; see {}",
                node.name,
                node.dir.display()
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// Brings every node back: thaws frozen ones, starts stopped or killed ones.
    pub fn heal(&self) {
        for i in 0..self.nodes.len() {
            match self.pid(i) {
                Some(pid) => {
                    // SIGCONT to a running process does nothing.
                    crate::signal(pid, SIGCONT);
                    if ctl(&self.nodes[i].name, &["-t", "60", "await_startup"]).is_err() {
                        let _ = ctl(&self.nodes[i].name, &["-t", "60", "start_app"]);
                    }
                }
                None => self.start(i),
            }
        }
        self.await_whole();
    }

    /// Waits until every node runs in the cluster and no partition is left
    /// (a node frozen past net_ticktime comes back partitioned; autoheal
    /// restarts it). Restarts a node that stays partitioned.
    fn await_whole(&self) {
        let start = Instant::now();
        let mut restarted = false;
        loop {
            let status = ctl(&self.nodes[1].name, &["cluster_status", "--formatter", "json"]).unwrap_or_default();
            let whole = serde_json::from_str::<serde_json::Value>(&status).is_ok_and(|s| {
                let running = s["running_nodes"].as_array().map_or(0, Vec::len);
                let partitioned = s["partitions"].as_object().is_some_and(|p| !p.is_empty())
                    || s["partitions"].as_array().is_some_and(|p| !p.is_empty());
                running == self.nodes.len() && !partitioned
            });
            if whole {
                return;
            }
            if !restarted && start.elapsed() > Duration::from_secs(30) {
                // Autoheal did not: restart the applications of every node but c2.
                for node in self.nodes.iter().filter(|n| n.name != self.nodes[1].name) {
                    let _ = ctl(&node.name, &["-t", "60", "stop_app"]);
                    let _ = ctl(&node.name, &["-t", "60", "start_app"]);
                }
                restarted = true;
            }
            assert!(
                start.elapsed() < Duration::from_secs(180),
                "the test cluster is not whole after 180 s: {status}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// The node leading quorum queue `queue`, by index.
    pub fn leader(&self, queue: &str) -> usize {
        for i in 0..self.nodes.len() {
            let Ok(out) = ctl(
                &self.nodes[i].name,
                &["list_queues", "name", "leader", "--no-table-headers"],
            ) else {
                continue;
            };
            for line in out.lines() {
                let mut fields = line.split_whitespace();
                if fields.next() == Some(queue) {
                    let leader = fields.next().unwrap_or("");
                    if let Some(at) = self.nodes.iter().position(|n| n.name == leader) {
                        return at;
                    }
                }
            }
        }
        panic!("no leader found for queue {queue}");
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Pass or fail, the next test finds three running nodes.
        if std::thread::panicking() {
            self.heal();
        }
    }
}
