//! Test support: start the real binary, find its ports, wait on conditions.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Path of the binary under test.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cellns"))
}

/// `cellns [--log-format json] serve` on ephemeral loopback ports with
/// `extra` args; stdin and stdout closed, stderr piped.
pub fn serve_command(json_logs: bool, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin());
    if json_logs {
        cmd.args(["--log-format", "json"]);
    }
    cmd.args([
        "serve",
        "--dns-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
    ])
    .args(extra)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    cmd
}

/// Collects a child's stderr lines on a thread: every line is kept in the
/// returned log and also sent on the channel, as it arrives.
pub fn read_logs(
    stderr: std::process::ChildStderr,
) -> (Arc<Mutex<Vec<String>>>, mpsc::Receiver<String>) {
    let logs = Arc::new(Mutex::new(Vec::new()));
    let (tx, rx) = mpsc::channel::<String>();
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line.clone());
            let _ = tx.send(line);
        }
    });
    (logs, rx)
}

/// Runs `cellns serve` with `extra`, expecting it to exit by itself;
/// returns (exit code, stderr).
pub fn serve_fails(extra: &[&str]) -> (i32, String) {
    let mut child = serve_command(false, extra).spawn().expect("spawn cellns");
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().ok().flatten().is_some()
    });
    if !exited {
        let _ = child.kill();
        let _ = child.wait();
        panic!("cellns {extra:?} kept running; it should refuse to start");
    }
    let out = child.wait_with_output().expect("collect output");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `cellns serve`, killed on drop.
pub struct Server {
    child: Child,
    /// DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// HTTP address, when the server logged one.
    pub http: Option<SocketAddr>,
    /// Every log line so far (JSON objects, one per line).
    pub logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// Starts `cellns serve` on ephemeral loopback ports with `extra` args
    /// and waits until it has logged its DNS (and HTTP, if expected) address.
    pub fn start(extra: &[&str]) -> Server {
        Self::start_env(extra, &[])
    }

    /// As [`Server::start`], with extra environment variables.
    pub fn start_env(extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut cmd = serve_command(true, extra);
        cmd.env("RUST_LOG", "info,hickory_server=warn");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn cellns");
        let (logs, rx) = read_logs(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let (mut dns, mut http) = (None, None);
        while dns.is_none() || http.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match rx.recv_timeout(left) {
                Ok(l) => l,
                Err(_) => break,
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                continue;
            };
            let msg = v["message"].as_str().unwrap_or_default();
            let addr = v["addr"].as_str().and_then(|a| a.parse().ok());
            if msg.starts_with("DNS listening") {
                dns = dns.or(addr);
            } else if msg.starts_with("HTTP listening") {
                http = http.or(addr);
            }
            // Servers without the HTTP API yet: stop waiting once DNS is up
            // and the start-up is complete.
            if msg.starts_with("serving") && dns.is_some() {
                break;
            }
        }
        let Some(dns) = dns else {
            let _ = child.kill();
            panic!(
                "cellns did not report a DNS address within 30 s; logs:\n{}",
                logs.lock().unwrap().join("\n")
            );
        };
        Server {
            child,
            dns,
            http,
            logs,
        }
    }

    /// True when a log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.logs.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGTERM and waits (bounded) for exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        unsafe_kill(self.child.id(), "TERM");
        wait_until(Duration::from_secs(10), || {
            self.child.try_wait().ok().flatten().is_some()
        });
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a signal by name with the `kill` command (no libc in tests).
pub fn unsafe_kill(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status();
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Fails with a message naming the tool when `tool` is not on PATH.
pub fn require_tool(tool: &str) -> PathBuf {
    for dir in std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let p = dir.join(tool);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "this test needs `{tool}`, which is not installed (run scripts/test, which installs it)"
    );
}

/// The repository root.
pub fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The example map.
pub fn example_map() -> PathBuf {
    repo().join("zones/example.toml")
}

/// Runs `cellns ARGS` to completion: (exit code, stdout, stderr).
pub fn run_cli(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin()).args(args).output().expect("run cellns");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
