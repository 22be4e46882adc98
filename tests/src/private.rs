//! Private instances of RabbitMQ, PostgreSQL and Garage that fault tests may stop and start without
//! disturbing the shared services.
//!
//! Each is torn down when dropped, pass or fail; a stopped one is started
//! again by its owner test or simply discarded with it.
//!
//! Their ports are fixed, so at most one instance of each kind may exist on
//! the machine at a time: each holds an exclusive lock
//! (`/var/tmp/slingshot-private-<kind>.lock`, `flock(2)`) for its whole life.
//! A second test that wants one, in the same test binary or in another
//! process, waits for the first to drop its instance. The lock goes with the
//! process that holds it, so whatever instance a killed test run left behind
//! is found, stopped and removed by the next one to take the lock.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::process::{SIGCONT, SIGSTOP};

fn run(what: &str, command: &mut Command) -> String {
    let output = command
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        output.status.success(),
        "{what} failed ({}): {}{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_until(what: &str, timeout: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < timeout, "{what} not ready after {timeout:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Whether something accepts TCP connections on 127.0.0.1:`port`.
pub fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300)).is_ok()
}

fn chown(dir: &Path, user: &str) {
    run(
        "chown",
        Command::new("chown").arg("-R").arg(format!("{user}:{user}")).arg(dir),
    );
}

/// An exclusive `flock(2)` on a file naming one kind of private instance;
/// released when dropped or when the process ends, however it ends.
struct InstanceLock {
    _file: std::fs::File,
}

impl InstanceLock {
    /// Waits (blocking) until no other instance of `kind` exists, in this
    /// process or any other.
    fn acquire(kind: &str) -> InstanceLock {
        extern "C" {
            fn flock(fd: i32, operation: i32) -> i32;
        }
        const LOCK_EX: i32 = 2;
        let path = format!("/var/tmp/slingshot-private-{kind}.lock");
        // Opened close-on-exec (Rust's default): the servers a test starts
        // must not inherit the lock and hold it after the test is gone.
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        loop {
            // SAFETY: flock(2) on a descriptor this function owns.
            if unsafe { flock(std::os::fd::AsRawFd::as_raw_fd(&file), LOCK_EX) } == 0 {
                return InstanceLock { _file: file };
            }
            let e = std::io::Error::last_os_error();
            assert_eq!(e.kind(), std::io::ErrorKind::Interrupted, "flock {path}: {e}");
        }
    }
}

/// Directories of earlier instances of `kind` (`/var/tmp/slingshot-<kind>-*`).
/// Called with the kind's lock held, so every one is a leftover of a killed run.
fn leftover_dirs(kind: &str) -> Vec<PathBuf> {
    leftover_dirs_in(Path::new("/var/tmp"), kind)
}

/// Directories `base/slingshot-<kind>-*`.
fn leftover_dirs_in(base: &Path, kind: &str) -> Vec<PathBuf> {
    let prefix = format!("slingshot-{kind}-");
    std::fs::read_dir(base)
        .map(|dir| {
            dir.flatten()
                .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

fn remove_leftover(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir) {
        panic!("cannot remove {}, left by an earlier run: {e}", dir.display());
    }
}

fn private_dir(name: &str) -> tempfile::TempDir {
    private_dir_in(Path::new("/var/tmp"), name)
}

fn private_dir_in(base: &Path, name: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix(&format!("slingshot-{name}-"))
        .tempdir_in(base)
        .expect("private instance directory");
    // Services run as their own users; they must reach the directory.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    dir
}

/// A second RabbitMQ node on port 5673 (see `shared/services.md`).
pub struct PrivateRabbit {
    dir: tempfile::TempDir,
    child: Child,
    /// Declared last: released once the node is stopped and its directory gone.
    _lock: InstanceLock,
}

impl PrivateRabbit {
    pub const NODE: &'static str = "slingshot-fault@localhost";
    pub const PORT: u16 = 5673;

    pub fn start() -> PrivateRabbit {
        assert!(
            std::env::var("SLINGSHOT_TEST_RABBITMQ_PRIVATE_OK").is_ok(),
            "a private RabbitMQ node needs the rabbitmq OS user; run the tests with scripts/test.sh"
        );
        let lock = InstanceLock::acquire("rabbit");
        // A node left over by a crashed run would hold the port.
        let _ = Command::new("rabbitmqctl").args(["-n", Self::NODE, "stop"]).output();
        for dir in leftover_dirs("rabbit") {
            remove_leftover(&dir);
        }
        let dir = private_dir("rabbit");
        std::fs::write(dir.path().join("enabled_plugins"), "[].\n").unwrap();
        // Its own config: the machine's may pin the listener to 5672
        // (RABBITMQ_NODE_PORT does not override a configured listener).
        std::fs::write(
            dir.path().join("rabbitmq.conf"),
            format!(
                "listeners.tcp.default = 127.0.0.1:{}\nloopback_users = none\n",
                Self::PORT
            ),
        )
        .unwrap();
        chown(dir.path(), "rabbitmq");
        let d = dir.path();
        let child = Command::new("rabbitmq-server")
            .env("RABBITMQ_NODENAME", Self::NODE)
            .env("RABBITMQ_NODE_PORT", Self::PORT.to_string())
            .env("RABBITMQ_DIST_PORT", "25673")
            .env("RABBITMQ_MNESIA_BASE", d.join("mnesia"))
            .env("RABBITMQ_LOG_BASE", d.join("log"))
            .env("RABBITMQ_PID_FILE", d.join("pid"))
            .env("RABBITMQ_ENABLED_PLUGINS_FILE", d.join("enabled_plugins"))
            .env("RABBITMQ_CONFIG_FILE", d.join("rabbitmq.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start a private rabbitmq-server");
        let mut rabbit = PrivateRabbit {
            dir,
            child,
            _lock: lock,
        };
        // await_startup fails while the node is not yet registered; retry, but
        // give up at once if the server process died.
        wait_until("private RabbitMQ node", Duration::from_secs(120), || {
            if let Ok(Some(status)) = rabbit.child.try_wait() {
                panic!(
                    "the private rabbitmq-server exited with {status}; see {}",
                    rabbit.dir.path().join("log").display()
                );
            }
            Command::new("rabbitmqctl")
                .args(["-n", Self::NODE, "-t", "30", "await_startup"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        wait_until("private RabbitMQ port", Duration::from_secs(60), || {
            port_open(Self::PORT)
        });
        rabbit
    }

    fn ctl(&self, action: &str) {
        run(
            &format!("rabbitmqctl {action}"),
            Command::new("rabbitmqctl").args(["-n", Self::NODE, "-t", "120", action]),
        );
    }

    /// Sets the memory high watermark (a fraction of the machine's memory):
    /// a tiny one raises the memory alarm at once, and the broker blocks
    /// every connection that publishes until it is raised again. Dropping
    /// the instance removes it whatever the watermark.
    pub fn set_memory_watermark(&self, fraction: f64) {
        let fraction = fraction.to_string();
        run(
            &format!("rabbitmqctl set_vm_memory_high_watermark {fraction}"),
            Command::new("rabbitmqctl").args(["-n", Self::NODE, "set_vm_memory_high_watermark", &fraction]),
        );
    }

    /// Stops the broker application (connections drop; data stays).
    pub fn stop_app(&self) {
        self.ctl("stop_app");
    }

    /// Starts it again.
    pub fn start_app(&self) {
        self.ctl("start_app");
        self.ctl("await_startup");
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", Self::PORT)
    }
}

impl Drop for PrivateRabbit {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").args(["-n", Self::NODE, "stop"]).output();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = &self.dir;
    }
}

/// A second RabbitMQ 4.0 node on port 5683, in the root filesystem of
/// `scripts/rabbitmq4.sh` beside its node (whose epmd and `/proc` it uses,
/// so that one must run). Its directory is `/var/tmp/slingshot-rabbit4-*`
/// inside the root; its own `rabbitmq-env.conf` there names it.
pub struct PrivateRabbit4 {
    root: PathBuf,
    dir: tempfile::TempDir,
    child: Child,
    /// Declared last: released once the node is stopped and its directory gone.
    _lock: InstanceLock,
}

impl PrivateRabbit4 {
    pub const NODE: &'static str = "slingshot-fault4@localhost";
    pub const PORT: u16 = 5683;
    const DIST_PORT: u16 = 25683;

    /// A node with RabbitMQ 4.0's defaults.
    pub fn start() -> PrivateRabbit4 {
        Self::start_with("", None)
    }

    /// A node whose `rabbitmq.conf` has `conf` (lines) besides its listener,
    /// and whose `advanced.config` is `advanced` (Erlang terms), if given.
    pub fn start_with(conf: &str, advanced: Option<&str>) -> PrivateRabbit4 {
        let root = crate::rabbitmq4::root();
        let lock = InstanceLock::acquire("rabbit4");
        // A node left over by a crashed run would hold the port.
        let _ = crate::rabbitmq4::rabbitmqctl(Self::NODE).arg("stop").output();
        Self::await_gone(None);
        let base = root.join("var/tmp");
        for dir in leftover_dirs_in(&base, "rabbit4") {
            remove_leftover(&dir);
        }
        let dir = private_dir_in(&base, "rabbit4");
        let inside = Path::new("/var/tmp").join(dir.path().file_name().expect("a directory name"));
        let inside = inside.display();
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"))
        };
        write(
            "rabbitmq-env.conf",
            format!(
                "NODENAME={node}\nNODE_IP_ADDRESS=127.0.0.1\nNODE_PORT={port}\nDIST_PORT={dist}\n\
                 MNESIA_BASE={inside}/mnesia\nLOG_BASE={inside}/log\nPID_FILE={inside}/pid\n\
                 ENABLED_PLUGINS_FILE={inside}/enabled_plugins\nCONFIG_FILE={inside}/rabbitmq.conf\n\
                 ADVANCED_CONFIG_FILE={inside}/advanced.config\n\
                 export ERL_EPMD_PORT=4370\nexport ERL_EPMD_ADDRESS=127.0.0.1\n\
                 SERVER_ADDITIONAL_ERL_ARGS=\"-kernel inet_dist_use_interface {{127,0,0,1}}\"\n\
                 ulimit -S -n \"$(ulimit -H -n)\"\n",
                node = Self::NODE,
                port = Self::PORT,
                dist = Self::DIST_PORT,
            ),
        );
        write("enabled_plugins", "[].\n".into());
        let child = Self::configure_and_spawn(&root, &dir, conf, advanced);
        let mut rabbit = PrivateRabbit4 {
            root,
            dir,
            child,
            _lock: lock,
        };
        rabbit.await_startup();
        rabbit
    }

    /// Writes the node's `rabbitmq.conf` and `advanced.config` and starts it.
    fn configure_and_spawn(root: &Path, dir: &tempfile::TempDir, conf: &str, advanced: Option<&str>) -> Child {
        let inside = Path::new("/var/tmp").join(dir.path().file_name().expect("a directory name"));
        let inside = inside.display();
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).unwrap_or_else(|e| panic!("writing {name}: {e}"))
        };
        write(
            "rabbitmq.conf",
            format!(
                "listeners.tcp.default = 127.0.0.1:{}\nloopback_users = none\n{conf}\n",
                Self::PORT
            ),
        );
        write("advanced.config", format!("{}\n", advanced.unwrap_or("[].")));
        run(
            "chown (in the RabbitMQ 4 root)",
            crate::rabbitmq4::in_root("chown").args(["-R", "rabbitmq:rabbitmq", &inside.to_string()]),
        );
        // `env -i` cleared the environment: the node's own env file, set again.
        crate::rabbitmq4::in_root_at(root, "env")
            .arg(format!("RABBITMQ_CONF_ENV_FILE={inside}/rabbitmq-env.conf"))
            .arg("rabbitmq-server")
            .stdin(Stdio::null())
            .stdout(Self::output_file(dir))
            .stderr(Self::output_file(dir))
            .spawn()
            .expect("start a private RabbitMQ 4 node (chroot rabbitmq-server)")
    }

    /// Where `rabbitmq-server`'s own output goes (appended, start after start):
    /// what it says before its log file exists, such as why it would not boot.
    fn output_file(dir: &tempfile::TempDir) -> Stdio {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("server.out"))
            .map_or_else(|_| Stdio::null(), Stdio::from)
    }

    /// The last lines of the server's output and of its log, for a failure
    /// message: the directory goes with the node.
    fn last_words(&self) -> String {
        let tail = |path: PathBuf| {
            let text = std::fs::read_to_string(&path).unwrap_or_else(|e| format!("({e})"));
            let lines: Vec<&str> = text.lines().collect();
            let from = lines.len().saturating_sub(30);
            format!("--- {}:\n{}", path.display(), lines[from..].join("\n"))
        };
        let log = self.dir.path().join("log").join(format!("{}.log", Self::NODE));
        format!("{}\n{}", tail(self.dir.path().join("server.out")), tail(log))
    }

    /// Stops the node and starts it again, on its data, with `conf` and
    /// `advanced` in place of its configuration (see [`Self::start_with`]).
    pub fn restart_with(&mut self, conf: &str, advanced: Option<&str>) {
        let vm = self.vm_pid();
        self.stop();
        let _ = self.child.wait();
        Self::await_gone(vm);
        self.child = Self::configure_and_spawn(&self.root, &self.dir, conf, advanced);
        self.await_startup();
    }

    /// The node's Erlang VM, from its pid file.
    fn vm_pid(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse().ok())
    }

    /// Waits until a stopped node is gone: its VM exited, its name left
    /// epmd and its ports closed. `rabbitmqctl stop` may return before
    /// that, and the next node must not race the old one for its name,
    /// ports or files.
    fn await_gone(vm: Option<u32>) {
        wait_until(
            "the stopped RabbitMQ 4 node to be gone",
            Duration::from_secs(60),
            || {
                let exited = vm.is_none_or(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                let name = Self::NODE.split('@').next().unwrap_or(Self::NODE);
                let registered = crate::rabbitmq4::in_root("env")
                    .args(["ERL_EPMD_PORT=4370", "epmd", "-names"])
                    .output()
                    .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(&format!("name {name} ")));
                exited && !registered && !port_open(Self::PORT) && !port_open(Self::DIST_PORT)
            },
        );
    }

    fn await_startup(&mut self) {
        wait_until("private RabbitMQ 4 node", Duration::from_secs(120), || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the private RabbitMQ 4 node exited with {status} while starting:\n{}",
                    self.last_words()
                );
            }
            crate::rabbitmq4::rabbitmqctl(Self::NODE)
                .args(["-t", "30", "await_startup"])
                .output()
                .is_ok_and(|o| o.status.success())
        });
        wait_until("private RabbitMQ 4 port", Duration::from_secs(60), || {
            port_open(Self::PORT)
        });
    }

    /// `rabbitmqctl -n NODE args` (the 4.0 CLI); its output.
    pub fn ctl(&self, args: &[&str]) -> String {
        run(
            &format!("rabbitmqctl -n {} {}", Self::NODE, args.join(" ")),
            crate::rabbitmq4::rabbitmqctl(Self::NODE).args(["-t", "120"]).args(args),
        )
    }

    /// Stops the broker application (connections drop; data stays).
    pub fn stop_app(&self) {
        self.ctl(&["stop_app"]);
    }

    /// Starts it again.
    pub fn start_app(&self) {
        self.ctl(&["start_app"]);
        self.ctl(&["await_startup"]);
    }

    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:{}/%2f", Self::PORT)
    }

    /// Stops the node (the whole Erlang VM), which also writes out the rest
    /// of its log: RabbitMQ writes its log file in batches, a few seconds
    /// late.
    pub fn stop(&self) {
        self.ctl(&["stop"]);
    }

    /// The node's log so far (see [`PrivateRabbit4::stop`]).
    pub fn log(&self) -> String {
        let file = self.dir.path().join("log").join(format!("{}.log", Self::NODE));
        std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("cannot read {}: {e}", file.display()))
    }
}

impl Drop for PrivateRabbit4 {
    fn drop(&mut self) {
        let _ = crate::rabbitmq4::in_root_at(&self.root, "rabbitmqctl")
            .args(["-n", Self::NODE, "stop"])
            .stdin(Stdio::null())
            .output();
        // If it would not stop, its Erlang VM goes anyway.
        if let Some(pid) = std::fs::read_to_string(self.dir.path().join("pid"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
        {
            if Path::new(&format!("/proc/{pid}")).exists() {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A private RabbitMQ node of the shared broker's kind: [`PrivateRabbit`]
/// (3.10) beside the host's broker, [`PrivateRabbit4`] when the shared
/// broker is the 4.0 node (scripts/test.sh's RabbitMQ 4 lane).
pub enum LaneRabbit {
    Rabbit3(PrivateRabbit),
    Rabbit4(PrivateRabbit4),
}

impl LaneRabbit {
    pub fn start() -> LaneRabbit {
        if crate::rabbitmq4::shared_is_rabbitmq4() {
            LaneRabbit::Rabbit4(PrivateRabbit4::start())
        } else {
            LaneRabbit::Rabbit3(PrivateRabbit::start())
        }
    }

    pub fn port(&self) -> u16 {
        match self {
            LaneRabbit::Rabbit3(_) => PrivateRabbit::PORT,
            LaneRabbit::Rabbit4(_) => PrivateRabbit4::PORT,
        }
    }

    pub fn amqp_url(&self) -> String {
        match self {
            LaneRabbit::Rabbit3(r) => r.amqp_url(),
            LaneRabbit::Rabbit4(r) => r.amqp_url(),
        }
    }

    /// Stops the broker application (connections drop; data stays).
    pub fn stop_app(&self) {
        match self {
            LaneRabbit::Rabbit3(r) => r.stop_app(),
            LaneRabbit::Rabbit4(r) => r.stop_app(),
        }
    }

    /// Starts it again.
    pub fn start_app(&self) {
        match self {
            LaneRabbit::Rabbit3(r) => r.start_app(),
            LaneRabbit::Rabbit4(r) => r.start_app(),
        }
    }
}

/// A throwaway PostgreSQL cluster on port 5433, trust authentication.
pub struct PrivatePostgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// Declared last: released once the server is stopped and its directory gone.
    _lock: InstanceLock,
}

impl PrivatePostgres {
    pub const PORT: u16 = 5433;

    pub fn start() -> PrivatePostgres {
        let version = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL server binaries under /usr/lib/postgresql (run scripts/test.sh)")
            .flatten()
            .map(|e| e.path())
            .max()
            .expect("a PostgreSQL version");
        let bin = version.join("bin");
        let lock = InstanceLock::acquire("postgres");
        // A cluster left running by a killed run would hold the port.
        for dir in leftover_dirs("postgres") {
            let data = dir.join("data");
            if data.join("postmaster.pid").exists() {
                let _ = Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(bin.join("pg_ctl"))
                    .arg("-D")
                    .arg(&data)
                    .args(["-m", "immediate", "-w", "stop"])
                    .stdin(Stdio::null())
                    .output();
            }
            remove_leftover(&dir);
        }
        let dir = private_dir("postgres");
        chown(dir.path(), "postgres");
        let data = dir.path().join("data");
        run(
            "initdb",
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(bin.join("initdb"))
                .args(["-A", "trust", "-U", "postgres", "-D"])
                .arg(&data),
        );
        let pg = PrivatePostgres { dir, bin, _lock: lock };
        pg.start_server();
        pg
    }

    fn pg_ctl(&self, args: &[&str]) {
        let d = self.dir.path();
        run(
            &format!("pg_ctl {}", args.join(" ")),
            Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(self.bin.join("pg_ctl"))
                .arg("-D")
                .arg(d.join("data"))
                .args(args),
        );
    }

    /// Starts the server (again).
    pub fn start_server(&self) {
        let d = self.dir.path().display().to_string();
        let options = format!("-p {} -k {d} -c listen_addresses=127.0.0.1", Self::PORT);
        let log = format!("{d}/log");
        self.pg_ctl(&["-o", &options, "-l", &log, "-w", "start"]);
    }

    /// Stops the server (fast shutdown: connections are cut).
    pub fn stop_server(&self) {
        self.pg_ctl(&["-m", "fast", "-w", "stop"]);
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", Self::PORT)
    }

    /// Runs `sql` in its `postgres` database. Blocking.
    pub fn execute(&self, sql: &str) {
        crate::database::execute(&self.url(), &[sql]);
    }

    /// The rows of `table` in its `postgres` database. Blocking.
    pub fn count_rows(&self, table: &str) -> i64 {
        use diesel::{Connection, RunQueryDsl};
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::BigInt)]
            n: i64,
        }
        let mut c = diesel::PgConnection::establish(&self.url()).unwrap_or_else(|e| panic!("{}: {e}", self.url()));
        diesel::sql_query(format!("SELECT count(*) AS n FROM {table}"))
            .get_result::<Count>(&mut c)
            .unwrap_or_else(|e| panic!("counting {table}: {e}"))
            .n
    }

    /// Freezes the server, as a hung host would: SIGSTOP to the postmaster,
    /// then to every process it started. The kernel still accepts and
    /// acknowledges TCP for the frozen processes. Everything is resumed
    /// (SIGCONT) when the returned guard is dropped, pass or fail.
    pub fn freeze(&self) -> Frozen {
        let pid_file = self.dir.path().join("data").join("postmaster.pid");
        let text = std::fs::read_to_string(&pid_file).unwrap_or_else(|e| panic!("{}: {e}", pid_file.display()));
        let postmaster: u32 = text
            .lines()
            .next()
            .and_then(|l| l.trim().parse().ok())
            .unwrap_or_else(|| panic!("no pid in {}", pid_file.display()));
        // The guard exists before the first SIGSTOP, so whatever was stopped
        // is resumed even if listing the rest fails.
        let mut frozen = Frozen { pids: Vec::new() };
        send_signal(postmaster, SIGSTOP);
        frozen.pids.push(postmaster);
        // Stopped, the postmaster starts no more processes: its children now
        // are all there will be until it resumes.
        for child in children_of(postmaster) {
            if send_signal(child, SIGSTOP) {
                frozen.pids.push(child);
            }
        }
        frozen
    }
}

/// `kill(pid, signal)`; false if the process is gone.
fn send_signal(pid: u32, signal: i32) -> bool {
    extern "C" {
        fn kill(pid: i32, signal: i32) -> i32;
    }
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { kill(pid, signal) == 0 }
}

/// The processes whose parent is `parent` (`/proc/PID/stat`, field 4).
fn children_of(parent: u32) -> Vec<u32> {
    processes_where(|pid| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            // `pid (comm) state ppid ...`; comm may hold spaces and parentheses.
            stat.rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|ppid| ppid.parse::<u32>().ok())
                == Some(parent)
        })
    })
}

/// The IDs of the running processes for which `matches` holds.
fn processes_where(matches: impl Fn(u32) -> bool) -> Vec<u32> {
    let Ok(proc) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    proc.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| matches(pid))
        .collect()
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let d = self.dir.path();
        let _ = Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(d.join("data"))
            .args(["-m", "immediate", "-w", "stop"])
            .output();
    }
}

/// A single-node Garage on ports 3910 (S3), 3911 (RPC) and 3913 (admin).
pub struct PrivateGarage {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub access_key: String,
    pub secret_key: String,
    /// Declared last: released once the server is killed and its directory gone.
    _lock: InstanceLock,
}

impl PrivateGarage {
    pub const PORT: u16 = 3910;

    fn config(&self) -> PathBuf {
        self.dir.path().join("garage.toml")
    }

    fn garage(&self) -> Command {
        let mut command = Command::new("garage");
        command.arg("-c").arg(self.config());
        command
    }

    pub fn start() -> PrivateGarage {
        let lock = InstanceLock::acquire("garage");
        // A server left running by a killed run (its parent, the test, is
        // gone) would hold the ports: find it by its config's directory.
        let leftovers = leftover_dirs("garage");
        if !leftovers.is_empty() {
            for pid in processes_using(&leftovers) {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
            }
            for dir in &leftovers {
                remove_leftover(dir);
            }
        }
        let dir = private_dir("garage");
        let d = dir.path().display();
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let secret = format!("{:032x}{:032x}", seed, seed.rotate_left(64) ^ 0x5eed);
        std::fs::write(
            dir.path().join("garage.toml"),
            format!(
                "metadata_dir = \"{d}/meta\"\ndata_dir = \"{d}/data\"\ndb_engine = \"sqlite\"\nreplication_factor = 1\n\
                 rpc_bind_addr = \"127.0.0.1:3911\"\nrpc_public_addr = \"127.0.0.1:3911\"\nrpc_secret = \"{secret}\"\n\
                 [s3_api]\ns3_region = \"garage\"\napi_bind_addr = \"127.0.0.1:{}\"\nroot_domain = \".s3.garage.localhost\"\n\
                 [admin]\napi_bind_addr = \"127.0.0.1:3913\"\n",
                Self::PORT
            ),
        )
        .unwrap();
        let mut garage = PrivateGarage {
            dir,
            child: None,
            access_key: String::new(),
            secret_key: String::new(),
            _lock: lock,
        };
        garage.start_server();
        let node = run("garage node id", garage.garage().args(["node", "id", "-q"]));
        let node = node.trim().split('@').next().unwrap().to_string();
        run(
            "garage layout assign",
            garage
                .garage()
                .args(["layout", "assign", "-z", "dc1", "-c", "1G", &node]),
        );
        run(
            "garage layout apply",
            garage.garage().args(["layout", "apply", "--version", "1"]),
        );
        run("garage key create", garage.garage().args(["key", "create", "fault"]));
        run(
            "garage key allow",
            garage.garage().args(["key", "allow", "--create-bucket", "fault"]),
        );
        let info = run(
            "garage key info",
            garage.garage().args(["key", "info", "fault", "--show-secret"]),
        );
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|| panic!("no {name} in garage key info: {info}"))
        };
        garage.access_key = field("Key ID:");
        garage.secret_key = field("Secret key:");
        garage
    }

    /// Starts the server (again) and waits for its S3 port.
    pub fn start_server(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("garage.log")).unwrap();
        let child = self
            .garage()
            .arg("server")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start a private garage server (is garage installed? run scripts/test.sh)");
        self.child = Some(child);
        wait_until("private Garage", Duration::from_secs(60), || {
            port_open(Self::PORT) && self.garage().arg("status").output().is_ok_and(|o| o.status.success())
        });
    }

    /// Kills the server.
    pub fn stop_server(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until("private Garage to stop", Duration::from_secs(20), || {
            !port_open(Self::PORT)
        });
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", Self::PORT)
    }

    /// An S3 client of the private instance with its key.
    pub fn s3(&self) -> slingshot::storage::s3::S3Store {
        slingshot::storage::s3::S3Store::new(&slingshot::storage::s3::S3Config {
            endpoint: self.endpoint(),
            region: "garage".into(),
            access_key: self.access_key.clone(),
            secret_key: self.secret_key.clone(),
        })
    }

    /// Freezes the server (SIGSTOP: its sockets stay open, nothing answers)
    /// until the returned guard is dropped, which resumes it (SIGCONT), pass
    /// or fail.
    pub fn freeze(&self) -> Frozen {
        let pid = self
            .child
            .as_ref()
            .map(Child::id)
            .expect("a running private Garage to freeze");
        crate::signal(pid, SIGSTOP);
        Frozen { pids: vec![pid] }
    }

    /// Creates `bucket` under its global name, which the `garage bucket`
    /// commands use (one created through the S3 API gets only a name local
    /// to its key), and gives the key every right on it.
    pub fn create_bucket(&self, bucket: &str) {
        run("garage bucket create", self.garage().args(["bucket", "create", bucket]));
        run(
            "garage bucket allow",
            self.garage().args([
                "bucket", "allow", "--read", "--write", "--owner", bucket, "--key", "fault",
            ]),
        );
    }

    /// Takes the key's read, write and owner rights on `bucket` away: from
    /// now on every request of the key to it is refused (403).
    pub fn deny(&self, bucket: &str) {
        run(
            "garage bucket deny",
            self.garage().args([
                "bucket", "deny", "--read", "--write", "--owner", bucket, "--key", "fault",
            ]),
        );
    }
}

/// Processes frozen with SIGSTOP (a server and the processes it started);
/// dropping it sends each SIGCONT, the last stopped first.
pub struct Frozen {
    pids: Vec<u32>,
}

impl Frozen {
    /// Resumes the processes now.
    pub fn thaw(self) {}

    /// How many processes are frozen.
    pub fn count(&self) -> usize {
        self.pids.len()
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        for &pid in self.pids.iter().rev() {
            // Never panics here: this may run while a failed test unwinds.
            if !send_signal(pid, SIGCONT) {
                eprintln!("cannot resume process {pid}: {}", std::io::Error::last_os_error());
            }
        }
    }
}

impl Drop for PrivateGarage {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// IDs of the processes whose command line names a path inside one of `dirs`.
fn processes_using(dirs: &[PathBuf]) -> Vec<u32> {
    processes_where(|pid| {
        std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
            cmdline
                .split(|&b| b == 0)
                .map(|arg| Path::new(std::ffi::OsStr::from_bytes(arg)))
                .any(|arg| dirs.iter().any(|d| arg.starts_with(d)))
        })
    })
}
