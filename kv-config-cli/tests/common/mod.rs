//! Shared by the CLI tests: a config type, a server, and a runner for the real `kvc` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Arc;

use kv_config::store::{Bucket, BucketConfig, NatsStore, Store};
use kv_config::{KvConfig, KvValue, SCHEMA_KEY};
use kv_config_testing::NatsServer;
use serde::{Deserialize, Serialize};

#[derive(KvValue, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Debug,
    Info,
    Warn,
}

fn limits_ok(l: &Limits) -> Result<(), String> {
    if l.min > l.max {
        Err(format!("limits.min {} > limits.max {}", l.min, l.max))
    } else {
        Ok(())
    }
}

/// The config the tests administer.
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppConfig {
    /// Log level.
    #[kv(default = Level::Info)]
    pub log_level: Level,
    /// Service name.
    pub name: String,
    /// Pool limits; min <= max.
    #[kv(nested, validate = limits_ok)]
    pub limits: Limits,
    /// Token for the upstream API.
    #[kv(secret, default)]
    pub api_token: String,
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    #[kv(default = 1)]
    pub min: u32,
    #[kv(default = 10)]
    pub max: u32,
}

/// One server for one test, and helpers around it.
pub struct Env {
    pub server: NatsServer,
    pub store: Arc<NatsStore>,
    pub dir: tempfile::TempDir,
}

/// What a `kvc` run did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\nstderr: {}", self.stdout, self.stderr))
    }
}

pub fn kvc_path() -> PathBuf {
    assert_cmd::cargo::cargo_bin("kvc")
}

impl Env {
    pub async fn start() -> Env {
        let server = NatsServer::start().await;
        let store = NatsStore::connect(server.url(), async_nats::ConnectOptions::new()).await.expect("connect");
        Env { server, store: Arc::new(store), dir: tempfile::tempdir().expect("tempdir") }
    }

    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A bucket (history 10, atomic writes) with the schema of `AppConfig` published at `prefix`.
    pub async fn bucket_with_schema(&self, name: &str, prefix: &str) -> Arc<dyn Bucket> {
        let b = self.store.create_bucket(&BucketConfig::new(name).history(10)).await.expect("create");
        let schema = serde_json::to_vec(&AppConfig::schema()).expect("schema json");
        b.put(&format!("{prefix}{SCHEMA_KEY}"), schema.into()).await.expect("publish schema");
        b
    }

    /// Runs the real binary with `args`, stdin empty, no editor, author `tester@test`.
    pub fn kvc(&self, args: &[&str]) -> Run {
        self.kvc_with(args, &[], "")
    }

    /// The real binary with `args` and `env`, on this server, author `tester@test`, no colour,
    /// no editor, no prefix from the environment, every stream piped.
    fn command(&self, args: &[&str], env: &[(&str, &str)]) -> Command {
        let mut cmd = Command::new(kvc_path());
        cmd.args(args)
            .env("NATS_URL", self.url())
            .env("KVC_AUTHOR", "tester@test")
            .env("NO_COLOR", "1")
            .env_remove("EDITOR")
            .env_remove("VISUAL")
            .env_remove("KVC_PREFIX")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    }

    pub fn kvc_with(&self, args: &[&str], env: &[(&str, &str)], stdin: &str) -> Run {
        let mut child = self.command(args, env).spawn().expect("spawn kvc");
        {
            use std::io::Write;
            let mut input = child.stdin.take().expect("stdin");
            let _ = input.write_all(stdin.as_bytes());
        }
        let out: Output = child.wait_with_output().expect("kvc output");
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs the real binary like [`kvc`](Env::kvc), waits until it asks its `[y/N]` question on
    /// stderr, runs `at_prompt`, then answers `y`. Bounded: no question within 30 s, or no exit
    /// within 60 s after the answer, fails the test.
    pub fn kvc_answering_yes(&self, args: &[&str], at_prompt: impl FnOnce()) -> Run {
        use std::io::{Read, Write};
        use std::time::{Duration, Instant};
        let mut child = self.command(args, &[]).spawn().expect("spawn kvc");
        let mut stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        let mut err = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !String::from_utf8_lossy(&err).contains("[y/N]") {
            if Instant::now() > deadline {
                let _ = child.kill();
                panic!("kvc asked no question within 30 s: {}", String::from_utf8_lossy(&err));
            }
            if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(50)) {
                err.extend(chunk);
            }
        }
        at_prompt();
        child.stdin.take().expect("stdin").write_all(b"y\n").expect("answer");
        let answered = Instant::now();
        while child.try_wait().expect("wait").is_none() {
            if answered.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let out = child.wait_with_output().expect("kvc output");
        while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
            err.extend(chunk);
        }
        Run {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&err).into_owned(),
        }
    }

    /// Writes an executable shell script into the test's directory.
    pub fn script(&self, name: &str, body: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\nset -e\n{body}\n")).expect("write script");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        path
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// The live values of a bucket (JSON text by key), schema key included.
/// Every live value except the write guard (its content is a timestamp).
pub async fn values(b: &dyn Bucket) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for k in b.keys().await.expect("keys").into_iter().filter(|k| !k.ends_with(kv_config::GUARD_KEY)) {
        if let Some(v) = b.get(&k).await.expect("get") {
            out.push((k, String::from_utf8_lossy(&v).into_owned()));
        }
    }
    out
}

/// Output with times, ages and revisions made stable for snapshots.
pub fn stable(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        out.push_str(&redact_line(line));
        out.push('\n');
    }
    out
}

fn redact_line(line: &str) -> String {
    // RFC 3339 times (any precision).
    let mut s = line.to_string();
    while let Some(pos) = find_time(&s) {
        let end = s[pos..].find('Z').map(|e| pos + e + 1).unwrap_or(s.len());
        s.replace_range(pos..end, "[time]");
    }
    // JSON revisions.
    if let Some(i) = s.find("\"revision\": ") {
        let start = i + "\"revision\": ".len();
        let end = s[start..].find(|c: char| !c.is_ascii_digit()).map_or(s.len(), |e| start + e);
        if end > start {
            s.replace_range(start..end, "\"[rev]\"");
        }
    }
    // Ages in table cells: `┆ 12s ┆`.
    let mut out = String::new();
    for (i, cell) in s.split('┆').enumerate() {
        if i > 0 {
            out.push('┆');
        }
        let t = cell.trim();
        let is_age = t.len() >= 2 && t.len() <= 3 && t[..t.len() - 1].chars().all(|c| c.is_ascii_digit()) && t.ends_with(['s', 'm', 'h', 'd']);
        if is_age {
            out.push_str(&format!(" {:<width$} ", "AGE", width = cell.len().saturating_sub(2)));
        } else {
            out.push_str(cell);
        }
    }
    out
}

fn find_time(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    (0..b.len().saturating_sub(19)).find(|&i| {
        b[i..i + 4].iter().all(u8::is_ascii_digit) && b[i + 4] == b'-' && b[i + 7] == b'-' && b[i + 10] == b'T' && b[i + 13] == b':'
    })
}

pub fn assert_no_file(p: &Path) {
    assert!(!p.exists(), "{} exists", p.display());
}

/// A `Write` whose bytes the test reads back (a typed kvc's printer output).
#[derive(Clone, Default)]
pub struct Buf(pub Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Buf {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Buf {
    /// Everything written so far.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}
