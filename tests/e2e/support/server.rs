//! The server launcher and its log reader: the real binary, `cellns
//! --log-format json serve --dns-listen 127.0.0.1:0 --http-listen
//! 127.0.0.1:0`, its ports read from the JSON lines it logs, every line kept
//! (with the instant the test read it) for the tests to look at.

use std::io::{BufRead as _, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use super::{STARTUP, bin, signal, wait_until};

/// The lines a server logged, as they arrive (read on a thread).
#[derive(Debug, Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<(Instant, String)>>>);

impl Logs {
    /// Starts collecting `stderr`; every line is also sent on the returned
    /// channel as it arrives (the launcher waits on it).
    fn collect(stderr: std::process::ChildStderr) -> (Self, mpsc::Receiver<String>) {
        let logs = Self::default();
        let (tx, rx) = mpsc::channel();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().push((Instant::now(), line.clone()));
                let _ = tx.send(line);
            }
        });
        (logs, rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(Instant, String)>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every line so far, one per line (for failure messages).
    pub fn text(&self) -> String {
        let lines: Vec<String> = self.lock().iter().map(|(_, l)| l.clone()).collect();
        lines.join("\n")
    }

    /// True when a line contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lock().iter().any(|(_, l)| l.contains(needle))
    }

    /// The JSON lines so far (others skipped), each with the instant the
    /// test read it.
    pub fn json_at(&self) -> Vec<(Instant, serde_json::Value)> {
        self.lock()
            .iter()
            .filter_map(|(at, l)| Some((*at, serde_json::from_str(l).ok()?)))
            .collect()
    }

    /// The JSON lines so far.
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.json_at().into_iter().map(|(_, v)| v).collect()
    }

    /// The JSON lines whose message is exactly `message`.
    pub fn messages(&self, message: &str) -> Vec<serde_json::Value> {
        self.json()
            .into_iter()
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Waits until a line at `level` whose message contains `needle` was
    /// logged, at most `within`; returns it.
    pub fn wait_for(
        &self,
        level: &str,
        needle: &str,
        within: Duration,
    ) -> Option<serde_json::Value> {
        self.wait_for_nth(level, needle, 1, within)
    }

    /// Waits until `n` lines at `level` whose message contains `needle`
    /// were logged, at most `within`; returns the `n`th.
    pub fn wait_for_nth(
        &self,
        level: &str,
        needle: &str,
        n: usize,
        within: Duration,
    ) -> Option<serde_json::Value> {
        let mut found = None;
        wait_until(within, || {
            found = self
                .json()
                .into_iter()
                .filter(|v| {
                    v["level"].as_str() == Some(level)
                        && v["message"].as_str().is_some_and(|m| m.contains(needle))
                })
                .nth(n - 1);
            found.is_some()
        });
        found
    }
}

/// How a server is started: arguments, environment, DNS listen address.
#[derive(Debug, Clone)]
pub struct Launch {
    args: Vec<String>,
    env: Vec<(String, String)>,
    dns_listen: String,
    nofile: Option<u64>,
}

impl Launch {
    /// `cellns serve` with `args` (after the listen addresses).
    pub fn new(args: &[&str]) -> Self {
        Self {
            args: args.iter().map(|a| (*a).to_owned()).collect(),
            env: vec![("RUST_LOG".into(), "info,hickory_server=warn".into())],
            dns_listen: "127.0.0.1:0".into(),
            nofile: None,
        }
    }

    /// Runs the server with `RLIMIT_NOFILE` (soft and hard) set to `n`.
    pub fn nofile(mut self, n: u64) -> Self {
        self.nofile = Some(n);
        self
    }

    /// Listens for DNS on `addr` instead of 127.0.0.1:0.
    pub fn dns_listen(mut self, addr: &str) -> Self {
        addr.clone_into(&mut self.dns_listen);
        self
    }

    fn command(&self, json_logs: bool) -> Command {
        let mut cmd = Command::new(bin());
        if json_logs {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(["serve", "--dns-listen", &self.dns_listen])
            .args(["--http-listen", "127.0.0.1:0"])
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(n) = self.nofile {
            use std::os::unix::process::CommandExt as _;
            let limit = libc::rlimit {
                rlim_cur: n,
                rlim_max: n,
            };
            // SAFETY: runs in the child between fork and exec, and only
            // calls setrlimit (async-signal-safe) on a struct it owns.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        cmd
    }

    /// Starts the server and reads its log until `done` says the start-up
    /// is far enough (or the process ends, or [`STARTUP`] passes).
    fn spawn_until(&self, mut done: impl FnMut(&serde_json::Value) -> bool) -> (Process, bool) {
        let mut child = self.command(true).spawn().expect("spawn cellns");
        let (logs, rx) = Logs::collect(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + STARTUP;
        let mut reached = false;
        while !reached {
            let left = deadline.saturating_duration_since(Instant::now());
            // Disconnected: the process closed stderr (it exited).
            let Ok(line) = rx.recv_timeout(left) else {
                break;
            };
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                reached = done(&v);
            }
        }
        (Process { child, logs }, reached)
    }

    /// Starts the server and returns once it logs "serving" (map loaded,
    /// DNS bound), with the addresses it logged.
    pub fn start(self) -> Server {
        let (proc, serving) = self.spawn_until(|v| v["message"] == "serving");
        let dns = proc.logged_addr("DNS listening");
        let (true, Some(dns)) = (serving, dns) else {
            panic!(
                "cellns {:?} was not serving with a DNS address within {STARTUP:?}; logs:\n{}",
                self.args,
                proc.logs.text()
            );
        };
        let http = proc.logged_addr("HTTP listening");
        Server { proc, dns, http }
    }

    /// Starts the server and returns as soon as its HTTP API listens (it
    /// does before the map is loaded): for watching start-up.
    pub fn start_early(self) -> Starting {
        let (proc, up) = self.spawn_until(|v| v["message"] == "HTTP listening");
        let (true, Some(http)) = (up, proc.logged_addr("HTTP listening")) else {
            panic!(
                "cellns did not report its HTTP address within {STARTUP:?}; logs:\n{}",
                proc.logs.text()
            );
        };
        Starting { proc, http }
    }

    /// Runs the server expecting it to refuse to start: returns its exit
    /// code and (human-readable) stderr.
    pub fn fails(self) -> (i32, String) {
        let mut child = self.command(false).spawn().expect("spawn cellns");
        let exited = wait_until(STARTUP, || child.try_wait().ok().flatten().is_some());
        if !exited {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "cellns {:?} kept running; it should refuse to start",
                self.args
            );
        }
        let out = child.wait_with_output().expect("collect output");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The process and its logs; killed on drop.
#[derive(Debug)]
struct Process {
    child: Child,
    logs: Logs,
}

impl Process {
    /// The address of the first line whose message starts with `what`.
    fn logged_addr(&self, what: &str) -> Option<SocketAddr> {
        self.logs.json().iter().find_map(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(what))
                .then(|| v["addr"].as_str()?.parse().ok())?
        })
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `cellns serve`, killed on drop.
#[derive(Debug)]
pub struct Server {
    proc: Process,
    /// DNS address (UDP and TCP).
    pub dns: SocketAddr,
    /// HTTP address.
    pub http: Option<SocketAddr>,
}

impl Server {
    /// Starts `cellns serve ARGS` on ephemeral loopback ports; returns once
    /// it serves (see [`Launch::start`]).
    pub fn start(args: &[&str]) -> Self {
        Launch::new(args).start()
    }

    /// The HTTP address (every server has one).
    pub fn http(&self) -> SocketAddr {
        self.http.expect("HTTP address logged")
    }

    /// Its log.
    pub fn logs(&self) -> &Logs {
        &self.proc.logs
    }

    /// True when a log line contains `needle`.
    pub fn logged(&self, needle: &str) -> bool {
        self.proc.logs.contains(needle)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Waits up to `within` for the process to exit (after a signal the
    /// test sent); its status.
    pub fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.proc.child;
        wait_until(within, || child.try_wait().ok().flatten().is_some());
        child.try_wait().ok().flatten()
    }

    /// Sends SIGTERM and waits (bounded) for exit; returns the exit status.
    pub fn terminate(&mut self) -> Option<std::process::ExitStatus> {
        signal(self.pid(), "TERM");
        let child = &mut self.proc.child;
        wait_until(STARTUP, || child.try_wait().ok().flatten().is_some());
        child.try_wait().ok().flatten()
    }
}

/// A server observed from its first log line (see [`Launch::start_early`]).
#[derive(Debug)]
pub struct Starting {
    proc: Process,
    /// The HTTP address (logged before the map is loaded).
    pub http: SocketAddr,
}

impl Starting {
    /// Its log.
    pub fn logs(&self) -> &Logs {
        &self.proc.logs
    }

    /// The DNS address, once logged.
    pub fn dns(&self) -> Option<SocketAddr> {
        self.proc.logged_addr("DNS listening")
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.proc.child.id()
    }

    /// Waits up to `within` for the process to exit by itself; its status.
    pub fn exit_within(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let child = &mut self.proc.child;
        wait_until(within, || child.try_wait().ok().flatten().is_some());
        child.try_wait().ok().flatten()
    }
}

/// Runs `cellns serve ARGS`, expecting it to refuse to start: (exit code,
/// stderr).
pub fn serve_fails(args: &[&str]) -> (i32, String) {
    Launch::new(args).fails()
}
