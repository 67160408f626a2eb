//! The real `alkhub` binary as a child process, for the fuzzer, the soak
//! benchmark and the chaos tests: a temporary folder as its working directory
//! (configuration file, SQLite database, plugin cache), an ephemeral port read
//! from its log, tokens made with its own CLI, its resident memory read from
//! `/proc`, and a watch on its stderr for panics.
//!
//! It knows nothing of the hub's internals: only the command line, the log
//! line `alkhub listening addr=...` and the HTTP and WebSocket endpoints.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// The hub binary cargo built beside this bench or test.
pub const BINARY: &str = env!("CARGO_BIN_EXE_alkhub");

/// The hub binary to run: `ALKHUB_BENCH_BINARY` when set (to measure
/// another build, say the one before a change, with the same harness),
/// otherwise [`BINARY`].
pub fn binary() -> String {
    std::env::var("ALKHUB_BENCH_BINARY").unwrap_or_else(|_| BINARY.to_owned())
}

/// What the stderr watcher saw.
#[derive(Default)]
pub struct Stderr {
    /// Lines that contain `panicked` (the first 20).
    pub panics: Mutex<Vec<String>>,
    /// How many lines contain `panicked`.
    pub panic_count: AtomicU64,
    /// The last lines, for a report after a failure.
    pub tail: Mutex<std::collections::VecDeque<String>>,
    /// Every line seen.
    pub lines: AtomicU64,
}

const TAIL_LINES: usize = 40;

/// One running (or killed) hub process.
pub struct HubProcess {
    pub child: Child,
    pub addr: SocketAddr,
    pub database_url: String,
    pub dir: PathBuf,
    pub stderr: Arc<Stderr>,
}

/// Where a hub keeps its files and which database it uses; survives restarts.
pub struct HubFiles {
    pub dir: tempfile::TempDir,
    pub database_url: String,
    /// Body of `alkhub.toml` (the hub rejects unknown keys).
    pub config: String,
}

impl HubFiles {
    /// A temporary folder with a SQLite database in it and `config` as
    /// `alkhub.toml` (for example "[limits]\nheartbeat_ms = 1000\n").
    pub fn sqlite(config: &str) -> HubFiles {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let database_url = format!("sqlite://{}", dir.path().join("alkhub.db").display());
        Self::with_database(dir, database_url, config)
    }

    /// A temporary folder and a database at `database_url`.
    pub fn with_database(dir: tempfile::TempDir, database_url: String, config: &str) -> HubFiles {
        std::fs::write(dir.path().join("alkhub.toml"), config).expect("alkhub.toml written");
        HubFiles {
            dir,
            database_url,
            config: config.to_owned(),
        }
    }

    /// Runs `alkhub <args>` on this database and returns stdout; panics on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = Command::new(binary())
            .args(args)
            .arg("--database-url")
            .arg(&self.database_url)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "warn")
            .output()
            .expect("alkhub runs");
        assert!(
            output.status.success(),
            "alkhub {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Creates a spoke or client (`kind` is "spoke" or "client") and returns
    /// its token, which the CLI prints on its last line.
    pub fn token(&self, kind: &str, id: &str) -> String {
        let out = self.cli(&[kind, "add", id]);
        out.lines()
            .last()
            .expect("a token on the last line")
            .trim()
            .to_owned()
    }

    /// Starts `alkhub serve` on an ephemeral port and waits until it listens.
    pub fn serve(&self) -> HubProcess {
        let mut child = Command::new(binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--config",
                "alkhub.toml",
            ])
            .arg("--database-url")
            .arg(&self.database_url)
            .current_dir(self.dir.path())
            .env("RUST_LOG", "info")
            .env("RUST_BACKTRACE", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("alkhub serve starts");
        let stderr = Arc::new(Stderr::default());
        let (addr_tx, addr_rx) = mpsc::channel();
        let lines = BufReader::new(child.stderr.take().expect("piped stderr"));
        let watch = stderr.clone();
        // The watcher reads until the process closes stderr, so the pipe never
        // fills and blocks the hub.
        std::thread::spawn(move || {
            let mut addr_tx = Some(addr_tx);
            for line in lines.lines() {
                let Ok(line) = line else { break };
                watch.lines.fetch_add(1, Ordering::Relaxed);
                if line.contains("panicked") {
                    watch.panic_count.fetch_add(1, Ordering::Relaxed);
                    let mut panics = watch.panics.lock().unwrap();
                    if panics.len() < 20 {
                        panics.push(line.clone());
                    }
                }
                if line.contains("listening") {
                    if let Some(rest) = line.split("addr=").nth(1) {
                        if let Some(tx) = addr_tx.take() {
                            let _ =
                                tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
                        }
                    }
                }
                let mut tail = watch.tail.lock().unwrap();
                if tail.len() == TAIL_LINES {
                    tail.pop_front();
                }
                tail.push_back(line);
            }
        });
        let addr = match addr_rx.recv_timeout(Duration::from_secs(120)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                let tail = stderr.tail.lock().unwrap().clone();
                panic!("alkhub serve did not start listening; its log:\n{tail:#?}");
            }
        };
        // Strip terminal colours, if any slipped in.
        let addr: String = addr
            .chars()
            .filter(|c| c.is_ascii_digit() || *c == '.' || *c == ':')
            .collect();
        HubProcess {
            child,
            addr: addr.parse().expect("a socket address in the log"),
            database_url: self.database_url.clone(),
            dir: self.dir.path().to_owned(),
            stderr,
        }
    }
}

impl HubProcess {
    /// `ws://ADDR/v1/spokes/connect`.
    pub fn spokes_url(&self) -> String {
        format!("ws://{}/v1/spokes/connect", self.addr)
    }

    /// `ws://ADDR/v1/clients/connect`.
    pub fn clients_url(&self) -> String {
        format!("ws://{}/v1/clients/connect", self.addr)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Resident memory in KiB, or `None` once the process is gone.
    pub fn rss_kib(&self) -> Option<u64> {
        rss_kib(self.pid())
    }

    /// The exit status if the process has ended.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Why the hub counts as crashed, if it does: it exited, or it printed
    /// `panicked`.
    pub fn crash(&mut self) -> Option<String> {
        if let Some(status) = self.exited() {
            return Some(format!("the hub exited: {status}"));
        }
        (self.panics() > 0).then(|| "the hub printed `panicked`".to_owned())
    }

    /// Lines of stderr containing `panicked`.
    pub fn panics(&self) -> u64 {
        self.stderr.panic_count.load(Ordering::Relaxed)
    }

    /// The last lines of the hub's log.
    pub fn log_tail(&self) -> Vec<String> {
        self.stderr.tail.lock().unwrap().iter().cloned().collect()
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait up to `within` for a clean exit; returns whether it exited.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let start = std::time::Instant::now();
        while start.elapsed() < within {
            if self.exited().is_some() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        if self.exited().is_none() {
            self.kill9();
        }
    }
}

/// `VmRSS` of a process in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Reads an environment variable as a number, with a default.
pub fn env_num<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        Err(_) => default,
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// A minimal HTTP/1.1 exchange over a fresh connection (`Connection: close`):
/// returns the status (0 when no status line came back) and the raw body,
/// reading at most `max_bytes` and waiting at most `timeout`.
pub async fn http_raw(
    addr: SocketAddr,
    request: &[u8],
    max_bytes: usize,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream.write_all(request).await?;
        let mut raw = Vec::new();
        let mut buf = [0u8; 8192];
        while raw.len() < max_bytes {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(raw)
    };
    let raw = tokio::time::timeout(timeout, exchange)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "HTTP exchange"))??;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((status, body))
}

/// A JSON POST with a bearer token, as raw request bytes.
pub fn post_json(path: &str, token: Option<&str>, body: &str) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// A GET with an optional bearer token, as raw request bytes.
pub fn get(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{auth}\r\n")
        .into_bytes()
}

/// A `nats-server` of the test's own on a free loopback port, killed when
/// dropped. Its binary: `ALKHUB_NATS_SERVER`, else `/usr/sbin/nats-server`
/// when present, else `nats-server` on the PATH (CI installs Debian's).
pub struct NatsServer {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

impl NatsServer {
    /// The binary [`NatsServer::start`] runs.
    pub fn binary() -> String {
        std::env::var("ALKHUB_NATS_SERVER").unwrap_or_else(|_| {
            if std::path::Path::new("/usr/sbin/nats-server").exists() {
                "/usr/sbin/nats-server".to_owned()
            } else {
                "nats-server".to_owned()
            }
        })
    }

    /// Starts [`NatsServer::binary`] and waits until it accepts connections.
    pub fn start() -> NatsServer {
        Self::start_binary(&Self::binary())
    }

    /// Starts `binary` and waits until it accepts connections.
    pub fn start_binary(binary: &str) -> NatsServer {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {binary} ({e}); install Debian's nats-server"));
        let server = NatsServer { child, port };
        let start = std::time::Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "{binary} did not listen on port {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// `nats://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
