//! The relay under test as a separate process: `axon relay` on 127.0.0.1:0 with a
//! throw-away database and a config that allows the benchmark's keys.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::CliResult;

/// The relay_url a spawned relay is configured with (bound into AUTH signatures).
pub const SPAWNED_RELAY_URL: &str = "ws://axon-bench.localhost/";

/// A directory that is removed when dropped.
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates a fresh directory under `base` (default: the system temp dir).
    pub fn create(base: Option<&Path>) -> CliResult<ScratchDir> {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = base.map_or_else(std::env::temp_dir, Path::to_path_buf);
        let stamp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis());
        let path =
            base.join(format!("axon-bench-{}-{stamp}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        std::fs::create_dir_all(&path).map_err(|error| format!("cannot create {}: {error}", path.display()))?;
        Ok(ScratchDir { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The database file a spawned relay uses.
    pub fn db_path(&self) -> PathBuf {
        self.path.join("axon.db")
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// How to start the relay under test.
#[derive(Debug, Clone)]
pub struct SpawnConfig {
    /// The `axon` binary (default: this executable).
    pub relay_bin: PathBuf,
    /// Where scratch directories (database, config, log) go.
    pub db_dir: Option<PathBuf>,
}

/// A running `axon relay` child process.
pub struct SpawnedRelay {
    child: Child,
    // Kept open so the relay never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
    /// ws://ADDR to connect to.
    pub url: String,
    /// The relay_url AUTH signatures bind.
    pub relay_url: String,
    log: PathBuf,
}

/// JSON string quoting, which is also valid YAML.
fn quoted(text: &str) -> String {
    serde_json::Value::String(text.to_owned()).to_string()
}

impl SpawnedRelay {
    /// Writes relay.yaml into `dir`, starts the relay on 127.0.0.1:0 with `dir`'s database,
    /// and waits for its `listening on ADDR` line. `limits` are extra `limits:` entries.
    pub fn start(
        config: &SpawnConfig,
        dir: &ScratchDir,
        allow: &[[u8; 32]],
        limits: &[(&str, u64)],
    ) -> CliResult<SpawnedRelay> {
        let mut yaml = format!(
            "addr: \"127.0.0.1:0\"\ndb: {}\nrelay_url: {}\nallowlist:\n",
            quoted(&dir.db_path().display().to_string()),
            quoted(SPAWNED_RELAY_URL)
        );
        for key in allow {
            yaml.push_str(&format!("  - \"{}\"\n", hex::encode(key)));
        }
        if allow.is_empty() {
            yaml.push_str("  []\n");
        }
        if !limits.is_empty() {
            yaml.push_str("limits:\n");
            for (name, value) in limits {
                yaml.push_str(&format!("  {name}: {value}\n"));
            }
        }
        let config_path = dir.path().join("relay.yaml");
        std::fs::write(&config_path, yaml)
            .map_err(|error| format!("cannot write {}: {error}", config_path.display()))?;
        let log = dir.path().join("relay.log");
        let log_file =
            std::fs::File::create(&log).map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let mut child = Command::new(&config.relay_bin)
            .arg("relay")
            .arg("--config")
            .arg(&config_path)
            .env("RUST_LOG", std::env::var("AXON_BENCH_RELAY_LOG").unwrap_or_else(|_| "warn".into()))
            .env_remove("AXON_ALLOW")
            .env_remove("AXON_ADMIN")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .map_err(|error| format!("cannot start {} relay: {error}", config.relay_bin.display()))?;
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("the relay's stdout was not captured".into());
        };
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut line = String::new();
            let read = reader.read_line(&mut line);
            let _ = sender.send((read.map(|_| line), reader));
        });
        let first_line = receiver.recv_timeout(Duration::from_secs(60));
        let (line, reader) = match first_line {
            Ok((Ok(line), reader)) => (line, reader),
            Ok((Err(error), _)) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("cannot read the relay's stdout: {error}").into());
            }
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("the relay did not start within 60 s; log: {}", tail(&log)).into());
            }
        };
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the relay did not start (first line {:?}); log: {}", line.trim(), tail(&log)).into());
        };
        Ok(SpawnedRelay {
            url: format!("ws://{addr}"),
            relay_url: SPAWNED_RELAY_URL.to_owned(),
            child,
            _stdout: reader,
            log,
        })
    }

    /// The relay's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the relay with SIGTERM (a graceful drain), waiting up to 30 s, then SIGKILL.
    pub fn stop(mut self) -> CliResult<()> {
        let pid = self.child.id().to_string();
        let signalled = Command::new("kill")
            .args(["-TERM", &pid])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|status| status.success())
            .unwrap_or(false);
        let deadline = Instant::now() + Duration::from_secs(30);
        while signalled && Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(format!("the relay exited with {status}; log: {}", tail(&self.log)).into())
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(error) => return Err(format!("cannot wait for the relay: {error}").into()),
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        Err("the relay did not stop within 30 s of SIGTERM; killed it".into())
    }
}

impl Drop for SpawnedRelay {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The last lines of a log file, for error messages.
fn tail(path: &Path) -> String {
    let mut text = String::new();
    if let Ok(mut file) = std::fs::File::open(path) {
        let _ = file.read_to_string(&mut text);
    }
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(10);
    let shown = lines[start..].join("\n");
    if shown.is_empty() {
        format!("{} is empty", path.display())
    } else {
        shown
    }
}

/// A `/proc/PID/status` field in KiB (`VmRSS`, `VmHWM`); `None` where unreadable.
pub fn proc_status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// CPU time (user + system) a process has used, in seconds, from /proc/PID/stat (clock
/// ticks of 1/100 s, Linux's USER_HZ).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = text.get(text.rfind(')')? + 1..)?.split_whitespace().collect();
    let user: u64 = fields.get(11)?.parse().ok()?;
    let system: u64 = fields.get(12)?.parse().ok()?;
    Some((user + system) as f64 / 100.0)
}

/// This process's soft limit on open files, from /proc/self/limits.
pub fn open_files_limit() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = text.lines().find(|line| line.starts_with("Max open files"))?;
    line["Max open files".len()..].split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_status_and_limits() {
        let rss = proc_status_kib(std::process::id(), "VmRSS");
        assert!(rss.is_some_and(|kib| kib > 0), "{rss:?}");
        assert!(open_files_limit().is_some_and(|limit| limit > 0));
        assert!(cpu_seconds(std::process::id()).is_some_and(|seconds| seconds >= 0.0));
    }
}
