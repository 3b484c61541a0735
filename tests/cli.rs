//! The client subcommands of `axon`, driven as a user drives them: spawned `axon`
//! processes against a real `axon relay` child process with a temporary config and
//! database. Every wait is bounded; nothing sleeps for long.

use std::collections::{BTreeSet, HashSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use axon_relay::client::{Client, SubItem};
use axon_relay::protocol::msgpack::Reader;
use axon_relay::protocol::{Event, Filter, Tag};
use ed25519_dalek::SigningKey;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_axon");
/// The relay_url every test relay signs AUTH against (deliberately not its address).
const RELAY_URL: &str = "ws://axon.test";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// A finished `axon` process.
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

impl Run {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn lines(&self) -> Vec<String> {
        self.text().lines().map(str::to_owned).collect()
    }

    #[track_caller]
    fn ok(self) -> Run {
        assert!(
            self.status.success(),
            "expected success, got {}\nstdout: {}\nstderr: {}",
            self.status,
            self.text(),
            self.stderr
        );
        self
    }

    #[track_caller]
    fn fails_with(self, needle: &str) -> Run {
        assert!(!self.status.success(), "expected failure, got success\nstdout: {}", self.text());
        assert!(self.stderr.contains(needle), "stderr should mention {needle:?}: {}", self.stderr);
        self
    }
}

/// A command with no AXON_* variables inherited from the test's environment.
fn command(args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.args(args);
    for name in ["AXON_URL", "AXON_KEY", "AXON_RELAY_URL", "AXON_ALLOW", "AXON_ADMIN"] {
        command.env_remove(name);
    }
    command.env("RUST_LOG", "warn");
    command
}

/// Runs `command` to completion (at most 20 s), feeding `stdin`.
fn run_command(mut command: Command, stdin: Option<&[u8]>) -> Run {
    command
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn axon");
    if let (Some(data), Some(mut pipe)) = (stdin, child.stdin.take()) {
        let data = data.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&data);
        });
    }
    let mut stdout = child.stdout.take().expect("stdout");
    let mut stderr = child.stderr.take().expect("stderr");
    let out = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = stdout.read_to_end(&mut bytes);
        bytes
    });
    let err = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("axon {:?} did not finish within 20 s", command.get_args().collect::<Vec<_>>());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Run { status, stdout: out.join().expect("stdout reader"), stderr: err.join().expect("stderr reader") }
}

fn run(args: &[&str]) -> Run {
    run_command(command(args), None)
}

/// `axon keygen --out DIR/NAME.key`: the key file and the printed public key.
fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(format!("{name}.key"));
    let out = run(&["keygen", "--out", path.to_str().expect("utf-8 path")]).ok();
    let pubkey = out.text().trim().to_owned();
    assert_eq!(pubkey.len(), 64, "keygen prints a hex key: {pubkey:?}");
    (path, pubkey)
}

fn load_key(path: &Path) -> SigningKey {
    axon_relay::cli::keys::read_key_file(path).expect("key file")
}

/// A running `axon relay` child.
struct Relay {
    child: Option<Child>,
    addr: String,
    url: String,
    config: PathBuf,
    db: PathBuf,
    extra: Vec<String>,
}

impl Relay {
    /// Writes DIR/relay.yaml (relay_url "ws://axon.test", DB in DIR) and starts the relay
    /// on an ephemeral port with the extra flags (e.g. `--allow KEY`).
    fn start(dir: &Path, extra: &[&str]) -> Relay {
        let config = dir.join("relay.yaml");
        let db = dir.join("axon.db");
        std::fs::write(
            &config,
            format!("addr: \"127.0.0.1:0\"\ndb: \"{}\"\nrelay_url: \"{RELAY_URL}\"\n", db.display()),
        )
        .expect("write relay.yaml");
        let extra: Vec<String> = extra.iter().map(|arg| arg.to_string()).collect();
        let (child, addr) = spawn_relay(&config, &extra, None);
        Relay { child: Some(child), url: format!("ws://{addr}"), addr, config, db, extra }
    }

    /// Kills the relay without warning (SIGKILL).
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the relay again on the same address and database.
    fn restart(&mut self) {
        self.kill();
        let (child, addr) = spawn_relay(&self.config, &self.extra, Some(&self.addr));
        assert_eq!(addr, self.addr);
        self.child = Some(child);
    }

    /// The flags that point a client command at this relay as `key`.
    fn client_flags(&self, key: &Path) -> Vec<String> {
        vec![
            "--url".into(),
            self.url.clone(),
            "--relay-url".into(),
            RELAY_URL.into(),
            "--key".into(),
            key.display().to_string(),
        ]
    }

    /// `axon SUBCOMMAND <connection flags> REST...` as `key`.
    fn axon_command(&self, key: &Path, args: &[&str]) -> Command {
        let mut all: Vec<String> = vec![args[0].to_owned()];
        all.extend(self.client_flags(key));
        all.extend(args[1..].iter().map(|arg| arg.to_string()));
        let all: Vec<&str> = all.iter().map(String::as_str).collect();
        command(&all)
    }

    fn axon(&self, key: &Path, args: &[&str]) -> Run {
        run_command(self.axon_command(key, args), None)
    }

    fn axon_stdin(&self, key: &Path, args: &[&str], stdin: &[u8]) -> Run {
        run_command(self.axon_command(key, args), Some(stdin))
    }

    async fn connect(&self, key: &SigningKey) -> Client {
        Client::connect(&self.url, RELAY_URL, key).await.expect("connect")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Spawns `axon relay --config CONFIG [--addr ADDR] EXTRA...` and waits (10 s at most)
/// for its `listening on ADDR` line.
fn spawn_relay(config: &Path, extra: &[String], addr: Option<&str>) -> (Child, String) {
    let mut command = command(&["relay", "--config", config.to_str().expect("utf-8 path")]);
    command.args(extra);
    if let Some(addr) = addr {
        command.args(["--addr", addr]);
    }
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("spawn relay");
    let stdout = child.stdout.take().expect("relay stdout");
    let (lines, first) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        let _ = lines.send(line);
        // Keep draining so the relay never writes into a closed pipe.
        let _ = std::io::copy(&mut reader, &mut std::io::sink());
    });
    let line = first.recv_timeout(Duration::from_secs(10)).expect("relay prints `listening on` within 10 s");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line from the relay: {line:?}"))
        .to_owned();
    (child, addr)
}

/// A long-running `axon` process (e.g. `req --stream`) whose stdout lines are collected.
struct Streaming {
    child: Child,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Streaming {
    fn spawn(mut command: Command) -> Streaming {
        let mut child =
            command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("spawn axon");
        let stdout = child.stdout.take().expect("stdout");
        let mut stderr_pipe = child.stderr.take().expect("stderr");
        let (sender, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let collected = stderr.clone();
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stderr_pipe.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                collected.lock().expect("stderr lock").push_str(&String::from_utf8_lossy(&buffer[..read]));
            }
        });
        Streaming { child, lines, stderr }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr lock").clone()
    }

    #[track_caller]
    fn next_json(&self, within: Duration) -> Value {
        match self.lines.recv_timeout(within) {
            Ok(line) => serde_json::from_str(&line).unwrap_or_else(|_| panic!("not JSON: {line:?}")),
            Err(_) => panic!("no line within {within:?}; stderr so far:\n{}", self.stderr()),
        }
    }

    #[track_caller]
    fn assert_quiet(&self, for_: Duration) {
        if let Ok(line) = self.lines.recv_timeout(for_) {
            panic!("expected no more output, got {line}");
        }
    }

    /// Waits (bounded) for the process to exit by itself.
    fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Streaming {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

fn now() -> u64 {
    axon_relay::relay::unix_now()
}

/// Parses `axon publish` output: `<id hex> <seq>`.
#[track_caller]
fn published(run: &Run) -> (String, u64) {
    let text = run.text();
    let mut parts = text.split_whitespace();
    let id = parts.next().expect("id").to_owned();
    let seq = parts.next().expect("seq").parse().expect("numeric seq");
    assert_eq!(id.len(), 64, "{text}");
    (id, seq)
}

fn json_lines(run: &Run) -> Vec<Value> {
    run.lines().iter().map(|line| serde_json::from_str(line).unwrap_or_else(|_| panic!("not JSON: {line:?}"))).collect()
}

/// Splits an export stream into its events' bytes.
fn split_events(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut reader = Reader::new(bytes);
    let mut events = Vec::new();
    while !reader.is_at_end() {
        events.push(reader.skip_value().expect("a MessagePack value").to_vec());
    }
    events
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[test]
fn every_client_subcommand_has_help_with_an_example() {
    for subcommand in ["publish", "req", "allow", "revoke", "allowlist", "export", "import", "backup"] {
        let out = run(&[subcommand, "--help"]).ok();
        assert!(out.text().contains("Example: axon"), "{subcommand} --help: {}", out.text());
    }
    let out = run(&["--help"]).ok();
    for subcommand in ["publish", "req", "allowlist", "export", "import", "backup"] {
        assert!(out.text().contains(subcommand), "axon --help lists {subcommand}");
    }
}

#[test]
fn keygen_relay_publish_then_req_sees_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice_key, alice) = keygen(dir.path(), "alice");
    let relay = Relay::start(dir.path(), &["--allow", &alice]);

    // Text content, tags (a value may contain '='), via flags.
    let out = relay
        .axon(
            &alice_key,
            &["publish", "--kind", "1000", "--tag", "topic=news", "--tag", "url=https://x.test/?a=b", "hello world"],
        )
        .ok();
    let (id, seq) = published(&out);
    assert!(seq >= 1);

    let out = relay.axon(&alice_key, &["req", "--kind", "1000"]).ok();
    let events = json_lines(&out);
    assert_eq!(events.len(), 1, "{}", out.text());
    let event = &events[0];
    assert_eq!(event["id"], id.as_str());
    assert_eq!(event["pubkey"], alice.as_str());
    assert_eq!(event["kind"], 1000);
    assert_eq!(event["seq"], seq);
    assert_eq!(event["content"], "hello world");
    assert_eq!(event["content_encoding"], "utf8");
    assert_eq!(event["tags"], serde_json::json!([["topic", "news"], ["url", "https://x.test/?a=b"]]));
    let created_at = event["created_at"].as_u64().expect("created_at");
    assert!(created_at.abs_diff(now()) <= 5);

    // Binary content from a file prints as base64.
    let file = dir.path().join("blob.bin");
    std::fs::write(&file, [0xff, 0x00, 0x80, b'a']).expect("write blob");
    let out = relay.axon(&alice_key, &["publish", "--kind", "1001", "--file", file.to_str().expect("path")]).ok();
    let (blob_id, _) = published(&out);
    let out = relay.axon(&alice_key, &["req", "--id", &blob_id]).ok();
    let events = json_lines(&out);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"], "/wCAYQ==");
    assert_eq!(events[0]["content_encoding"], "base64");

    // Content from standard input, an expiry tag, and the connection from AXON_URL /
    // AXON_KEY / AXON_RELAY_URL instead of flags.
    let mut publish = command(&["publish", "--kind", "1002", "--expires-in", "1h", "-"]);
    publish.env("AXON_URL", &relay.url).env("AXON_KEY", &alice_key).env("AXON_RELAY_URL", RELAY_URL);
    let out = run_command(publish, Some(b"from stdin")).ok();
    let (stdin_id, _) = published(&out);
    let out = relay.axon(&alice_key, &["req", "--id", &stdin_id[..16]]).ok();
    let events = json_lines(&out);
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["content"], "from stdin");
    let expires_at: u64 = events[0]["tags"][0][1].as_str().expect("value").parse().expect("digits");
    assert_eq!(events[0]["tags"][0][0], "expires_at");
    assert!(expires_at.abs_diff(now() + 3600) <= 5);

    // Filters: author prefix, tag, limit, and replay order with --after-seq.
    let out = relay.axon(&alice_key, &["req", "--author", &alice[..8], "--tag", "topic=news", "--limit", "5"]).ok();
    assert_eq!(json_lines(&out).len(), 1);
    let out = relay.axon(&alice_key, &["req", "--after-seq", "0"]).ok();
    let seqs: Vec<u64> = json_lines(&out).iter().map(|event| event["seq"].as_u64().expect("seq")).collect();
    assert_eq!(seqs.len(), 3);
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "replay is oldest first: {seqs:?}");
    let out = relay.axon(&alice_key, &["req", "--since", "1h", "--until", "0"]).ok();
    assert!(out.text().is_empty());

    // Publishing the same event again (same created_at) is a 409, reported as success.
    let args = ["publish", "--kind", "1000", "--created-at", "1700000000", "again"];
    let first = published(&relay.axon(&alice_key, &args).ok());
    let second = relay.axon(&alice_key, &args).ok();
    assert!(second.stderr.contains("already stores"), "{}", second.stderr);
    assert_eq!(published(&second), first);

    // Clear messages for errors.
    let big = dir.path().join("big.bin");
    std::fs::write(&big, vec![b'x'; 70_000]).expect("write big");
    relay
        .axon(&alice_key, &["publish", "--kind", "1000", "--file", big.to_str().expect("path")])
        .fails_with("too large");
    let (mallory_key, _) = keygen(dir.path(), "mallory");
    relay.axon(&mallory_key, &["publish", "--kind", "1000", "hi"]).fails_with("not allowed");
    let key_path = alice_key.to_str().expect("path");
    run(&["publish", "--url", &relay.url, "--relay-url", "ws://elsewhere.test", "--key", key_path, "--kind", "1", "x"])
        .fails_with("relay_url");
    run(&["publish", "--url", "ws://127.0.0.1:1", "--key", key_path, "--kind", "1", "x"]).fails_with("cannot connect");
    run(&["publish", "--url", &relay.url, "--key", "/nonexistent/axon.key", "--kind", "1", "x"])
        .fails_with("cannot read key file");
    relay.axon(&alice_key, &["publish", "--kind", "1000", "--expires-in", "soon", "x"]).fails_with("duration");
}

#[test]
fn allow_and_revoke_take_effect_on_live_connections() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (admin_key, admin) = keygen(dir.path(), "admin");
    let (bob_key, bob) = keygen(dir.path(), "bob");
    let (carol_key, carol) = keygen(dir.path(), "carol");
    let relay = Relay::start(dir.path(), &["--admin", &admin]);
    let rt = runtime();

    // Not yet allowed.
    relay.axon(&bob_key, &["req"]).fails_with("not allowed");
    // A non-admin cannot allow anyone.
    let out = relay.axon(&carol_key, &["allow", &bob]);
    assert!(!out.status.success());

    let out = relay.axon(&admin_key, &["allow", &bob, &carol.to_uppercase()]).ok();
    assert_eq!(out.lines(), vec![format!("allowed {bob}"), format!("allowed {carol}")]);
    relay.axon(&carol_key, &["allow", &bob]).fails_with("not an admin");

    // The newly allowed keys can connect: a CLI stream and a library connection as bob.
    let stream = Streaming::spawn(relay.axon_command(&bob_key, &["req", "--stream", "--kind", "1000"]));
    let bob_client = rt.block_on(relay.connect(&load_key(&bob_key)));
    let mut bob_subscription =
        rt.block_on(bob_client.subscribe("live", vec![Filter::default()], None)).expect("subscribe");
    let out = relay.axon(&carol_key, &["publish", "--kind", "1000", "hello bob"]).ok();
    let (id, _) = published(&out);
    assert_eq!(stream.next_json(Duration::from_secs(5))["id"], id.as_str());

    let out = relay.axon(&admin_key, &["allowlist"]).ok();
    assert_eq!(out.lines(), vec![bob.clone(), carol.clone()]);

    // Revoke bob: his open connections are closed at once.
    let out = relay.axon(&admin_key, &["revoke", &bob]).ok();
    assert_eq!(out.lines(), vec![format!("revoked {bob}")]);
    rt.block_on(async {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match bob_subscription.next().await {
                    None => return,
                    Some(SubItem::Eose | SubItem::Event { .. }) => continue,
                    Some(SubItem::Ended(error)) => panic!("expected the connection to close, got {error:?}"),
                }
            }
        })
        .await;
        assert!(closed.is_ok(), "the revoked key's library connection was not closed within 5 s");
    });
    let mut stream = stream;
    let status = stream
        .wait_exit(Duration::from_secs(5))
        .unwrap_or_else(|| panic!("req --stream of a revoked key did not stop; stderr:\n{}", stream.stderr()));
    assert!(!status.success());
    assert!(stream.stderr().contains("403"), "{}", stream.stderr());
    relay.axon(&bob_key, &["req"]).fails_with("not allowed");

    // The effective list and the log.
    let out = relay.axon(&admin_key, &["allowlist"]).ok();
    assert_eq!(out.lines(), vec![carol.clone()]);
    let out = relay.axon(&admin_key, &["allowlist", "--log"]).ok();
    let log = out.lines();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(log[0].contains("\tallow\t") && log[0].ends_with(&format!("{bob},{carol}")), "{log:?}");
    assert!(log[1].contains("\trevoke\t") && log[1].ends_with(&bob), "{log:?}");
    // A non-admin sees no admin log.
    let out = relay.axon(&carol_key, &["allowlist"]).ok();
    assert!(out.text().is_empty());
    assert!(out.stderr.contains("not an admin"), "{}", out.stderr);
    // Keys from relay.yaml/flags cannot be revoked at run time.
    relay.axon(&admin_key, &["revoke", &admin]).fails_with("relay.yaml");
    relay.axon(&admin_key, &["allow", "abcd"]).fails_with("64 hex");
}

/// Publishes `count` events of several shapes as `key` (by the library: the subject of
/// these tests is export/import).
fn fill(rt: &tokio::runtime::Runtime, relay: &Relay, key: &SigningKey, round: u64, count: u64) {
    rt.block_on(async {
        let client = relay.connect(key).await;
        for index in 0..count {
            let kind = if index % 3 == 0 { 1001 } else { 1000 };
            let content =
                if index % 7 == 0 { vec![0xff, index as u8, 0] } else { format!("event {index}").into_bytes() };
            let mut tags = vec![Tag::new("n", [format!("{round}-{index}")])];
            if index % 5 == 0 {
                tags.push(Tag::new("expires_at", [(now() + 86_400).to_string()]));
                tags.push(Tag::new("x", ["a", "b", "c"]));
            }
            let event = Event::sign(key, now() - 1000 + index, kind, content, tags).expect("sign");
            client.publish(&event).await.expect("publish");
        }
    });
}

/// Explains how two export streams differ.
fn export_difference(expected: &[u8], actual: &[u8]) -> String {
    let (expected, actual) = (split_events(expected), split_events(actual));
    let same_set = expected.iter().collect::<BTreeSet<_>>() == actual.iter().collect::<BTreeSet<_>>();
    let moved = expected.iter().zip(&actual).filter(|(a, b)| a != b).count();
    if same_set && expected.len() == actual.len() {
        format!(
            "the same {} events (byte for byte) but {moved} of them in a different seq order: the relay committed \
             the pipelined publishes of one connection out of the order it received them",
            expected.len()
        )
    } else {
        format!("{} events exported, {} after the round trip; same set: {same_set}", expected.len(), actual.len())
    }
}

#[test]
fn export_then_import_into_a_fresh_relay_gives_identical_events() {
    let dir_a = tempfile::tempdir().expect("tempdir");
    let dir_b = tempfile::tempdir().expect("tempdir");
    let (alice_key, alice) = keygen(dir_a.path(), "alice");
    let relay_a = Relay::start(dir_a.path(), &["--allow", &alice]);
    let relay_b = Relay::start(dir_b.path(), &["--allow", &alice]);
    let rt = runtime();
    fill(&rt, &relay_a, &load_key(&alice_key), 0, 300);
    relay_a.axon(&alice_key, &["publish", "--kind", "1002", "--tag", "via=cli", "from the cli"]).ok();

    let exported = relay_a.axon(&alice_key, &["export"]).ok();
    assert!(exported.stderr.contains("exported 301 events"), "{}", exported.stderr);
    assert_eq!(split_events(&exported.stdout).len(), 301);
    let subset = relay_a.axon(&alice_key, &["export", "--kind", "1001"]).ok();
    assert_eq!(split_events(&subset.stdout).len(), 100);

    // The default import: many publishes in flight on one connection.
    let file = dir_b.path().join("events.axon");
    std::fs::write(&file, &exported.stdout).expect("write export");
    let out = relay_b.axon(&alice_key, &["import", file.to_str().expect("path")]).ok();
    assert!(out.text().contains("imported 301, duplicates 0, invalid 0, rejected 0"), "{}", out.text());
    let reexported = dir_b.path().join("again.axon");
    relay_b.axon(&alice_key, &["export", "--out", reexported.to_str().expect("path")]).ok();
    let again = std::fs::read(&reexported).expect("read re-export");
    assert!(
        again == exported.stdout,
        "export → import → export changed the stream: {}",
        export_difference(&exported.stdout, &again)
    );
}

#[test]
fn import_verifies_skips_duplicates_keeps_admin_order_and_reports() {
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (admin_key, admin) = keygen(dirs[0].path(), "admin");
    let (alice_key, alice) = keygen(dirs[0].path(), "alice");
    let (_, carol) = keygen(dirs[0].path(), "carol");
    let (_, dave) = keygen(dirs[0].path(), "dave");
    let flags = ["--admin", admin.as_str(), "--allow", alice.as_str()];
    let source = Relay::start(dirs[0].path(), &flags);
    let pipelined = Relay::start(dirs[1].path(), &flags);
    let sequential = Relay::start(dirs[2].path(), &flags);
    let rt = runtime();
    let alice_signing = load_key(&alice_key);

    // Regular events with an admin history in between: carol allowed then revoked,
    // dave allowed. Replayed in another order, carol would end up allowed.
    fill(&rt, &source, &alice_signing, 0, 40);
    source.axon(&admin_key, &["allow", &carol]).ok();
    fill(&rt, &source, &alice_signing, 1, 40);
    source.axon(&admin_key, &["revoke", &carol]).ok();
    source.axon(&admin_key, &["allow", &dave]).ok();
    fill(&rt, &source, &alice_signing, 2, 40);
    let exported = source.axon(&admin_key, &["export"]).ok().stdout;
    let events = split_events(&exported);
    assert_eq!(events.len(), 123, "the admin sees the admin log too");
    let file = dirs[1].path().join("events.axon");
    std::fs::write(&file, &exported).expect("write export");
    let path = file.to_str().expect("path");

    // Pipelined import: every event arrives; admin events keep their order.
    let out = pipelined.axon(&admin_key, &["import", path]).ok();
    assert!(out.text().contains("imported 123, duplicates 0, invalid 0, rejected 0"), "{}", out.text());
    let again = pipelined.axon(&admin_key, &["export"]).ok().stdout;
    let as_set = |events: Vec<Vec<u8>>| events.into_iter().collect::<BTreeSet<_>>();
    assert_eq!(as_set(split_events(&again)), as_set(events));
    let out = pipelined.axon(&admin_key, &["allowlist"]).ok();
    assert_eq!(out.lines(), vec![dave.clone()]);
    let out = pipelined.axon(&admin_key, &["allowlist", "--log"]).ok();
    let actions: Vec<String> =
        out.lines().iter().map(|line| line.split('\t').nth(2).unwrap_or("").to_owned()).collect();
    assert_eq!(actions, ["allow", "revoke", "allow"]);

    // One publish at a time keeps the exact order, whatever the relay does.
    let out = sequential.axon(&admin_key, &["import", path, "--in-flight", "1"]).ok();
    assert!(out.text().contains("imported 123,"), "{}", out.text());
    let again = sequential.axon(&admin_key, &["export"]).ok().stdout;
    assert!(again == exported, "{}", export_difference(&exported, &again));

    // Importing again: every event is a duplicate.
    let out = pipelined.axon(&admin_key, &["import", path]).ok();
    assert!(out.text().contains("imported 0, duplicates 123, invalid 0, rejected 0"), "{}", out.text());

    // An invalid event (bad signature) is reported, skipped and counted; the exit
    // status says not everything was imported. Standard input works as a source.
    let mut forged = Event::sign(&alice_signing, now(), 1000, b"forged".to_vec(), vec![]).expect("sign");
    forged.sig = [0; 64];
    let mut with_invalid = exported.clone();
    with_invalid.extend(forged.encode());
    let out = pipelined.axon_stdin(&admin_key, &["import", "-"], &with_invalid);
    assert!(!out.status.success());
    assert!(out.text().contains("imported 0, duplicates 123, invalid 1, rejected 0"), "{}", out.text());
    assert!(out.stderr.contains("bad signature"), "{}", out.stderr);
    assert!(out.stderr.contains("not imported"), "{}", out.stderr);

    // Events by a key the target relay does not allow are rejected, counted by code.
    let (mallory_key, _) = keygen(dirs[1].path(), "mallory");
    let foreign = Event::sign(&load_key(&mallory_key), now(), 1000, b"foreign".to_vec(), vec![]).expect("sign");
    let out = pipelined.axon_stdin(&admin_key, &["import", "-"], &foreign.encode());
    assert!(!out.status.success());
    assert!(out.text().contains("rejected 403: 1"), "{}", out.text());

    // A truncated stream stops at the broken event and says where.
    let truncated = &exported[..exported.len() - 3];
    let out = pipelined.axon_stdin(&admin_key, &["import", "-"], truncated);
    assert!(!out.status.success());
    assert!(out.stderr.contains("truncated or corrupt"), "{}", out.stderr);
    assert!(out.text().contains("duplicates 122"), "{}", out.text());
}

#[test]
fn backup_under_write_load_holds_every_acknowledged_event() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice_key, alice) = keygen(dir.path(), "alice");
    let relay = Relay::start(dir.path(), &["--allow", &alice]);
    let rt = runtime();
    let key = load_key(&alice_key);

    let acknowledged = Arc::new(Mutex::new(Vec::<[u8; 32]>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for worker in 0..3 {
        let client = rt.block_on(relay.connect(&key));
        let (acknowledged, stop, key) = (acknowledged.clone(), stop.clone(), key.clone());
        writers.push(rt.spawn(async move {
            let mut index = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let content = format!("{worker}-{index}").into_bytes();
                let event = Event::sign(&key, now(), 1000, content, vec![]).expect("sign");
                client.publish(&event).await.expect("publish under load");
                acknowledged.lock().expect("lock").push(event.id);
                index += 1;
            }
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while acknowledged.lock().expect("lock").len() < 300 {
        assert!(Instant::now() < deadline, "writers too slow");
        std::thread::sleep(Duration::from_millis(10));
    }

    // Every event acknowledged before the backup starts must be in it.
    let before: Vec<[u8; 32]> = acknowledged.lock().expect("lock").clone();
    let backup = dir.path().join("backup.db");
    let out = run(&["backup", backup.to_str().expect("path"), "--config", relay.config.to_str().expect("path")]).ok();
    let during = acknowledged.lock().expect("lock").len();
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        rt.block_on(writer).expect("writer");
    }
    assert!(out.text().contains("integrity_check: ok"), "{}", out.text());
    assert!(during > before.len(), "the writers kept publishing during the backup");

    let connection = rusqlite::Connection::open(&backup).expect("open backup");
    let check: String = connection.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity_check");
    assert_eq!(check, "ok");
    let mut statement = connection.prepare("SELECT id FROM events").expect("prepare");
    let stored: HashSet<Vec<u8>> = statement
        .query_map([], |row| row.get::<_, Vec<u8>>(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    let missing = before.iter().filter(|id| !stored.contains(&id[..])).count();
    assert_eq!(missing, 0, "{missing} acknowledged events missing from the backup");
    assert!(!backup.with_extension("db-wal").exists(), "the backup is one self-contained file");

    // Refuses to overwrite; --db works too; a missing database is an error, not a new file.
    let path = backup.to_str().expect("path");
    run(&["backup", path, "--db", relay.db.to_str().expect("path")]).fails_with("already exists");
    run(&["backup", path, "--db", relay.db.to_str().expect("path"), "--force"]).ok();
    let nowhere = dir.path().join("missing.db");
    run(&["backup", dir.path().join("b2.db").to_str().expect("path"), "--db", nowhere.to_str().expect("path")])
        .fails_with("no database file");
    assert!(!nowhere.exists());
}

#[test]
fn req_stream_resumes_after_the_relay_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice_key, alice) = keygen(dir.path(), "alice");
    let mut relay = Relay::start(dir.path(), &["--allow", &alice]);
    let publish = |relay: &Relay, content: &str| -> (String, u64) {
        published(&relay.axon(&alice_key, &["publish", "--kind", "1000", content]).ok())
    };

    let stream = Streaming::spawn(relay.axon_command(&alice_key, &["req", "--stream", "--kind", "1000"]));
    let mut expected = Vec::new();
    for content in ["one", "two"] {
        expected.push(publish(&relay, content));
        let line = stream.next_json(Duration::from_secs(5));
        assert_eq!(line["content"], content);
    }

    // Kill the relay; while it is down the stream waits (backoff 1 s, 2 s, ...). Start it
    // again on the same port and publish at once: the event stored before the stream
    // reconnects must arrive through the resume (after_seq = last printed seq).
    relay.kill();
    relay.restart();
    expected.push(publish(&relay, "three"));
    let line = stream.next_json(Duration::from_secs(8));
    assert_eq!(line["content"], "three");
    assert_eq!(line["seq"], expected[2].1);
    expected.push(publish(&relay, "four"));
    let line = stream.next_json(Duration::from_secs(5));
    assert_eq!(line["content"], "four");
    stream.assert_quiet(Duration::from_millis(300));
    let stderr = stream.stderr();
    assert!(stderr.contains(&format!("resuming after seq {}", expected[1].1)), "{stderr}");

    // The printed seqs were strictly increasing and every event was printed once.
    let seqs: BTreeSet<u64> = expected.iter().map(|(_, seq)| *seq).collect();
    assert_eq!(seqs.len(), 4);
}

/// `GET /metrics` of a child relay, as text.
fn metrics_text(relay: &Relay) -> String {
    let mut stream = std::net::TcpStream::connect(&relay.addr).expect("connect");
    write!(stream, "GET /metrics HTTP/1.1\r\nHost: axon.test\r\nConnection: close\r\n\r\n").expect("request");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("response");
    text
}

#[test]
fn import_waits_as_long_as_the_relay_asks_after_429() {
    let dirs: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().expect("tempdir")).collect();
    let (alice_key, alice) = keygen(dirs[0].path(), "alice");
    let source = Relay::start(dirs[0].path(), &["--allow", &alice]);
    let rt = runtime();
    fill(&rt, &source, &load_key(&alice_key), 0, 4);
    let exported = source.axon(&alice_key, &["export"]).ok().stdout;
    let file = dirs[1].path().join("events.axon");
    std::fs::write(&file, &exported).expect("write export");

    // A relay accepting one event per second per key, no burst.
    let config = dirs[1].path().join("relay.yaml");
    let db = dirs[1].path().join("axon.db");
    std::fs::write(
        &config,
        format!(
            "addr: \"127.0.0.1:0\"\ndb: \"{}\"\nrelay_url: \"{RELAY_URL}\"\nlimits:\n  publish_per_second: 1\n  publish_burst: 1\n",
            db.display()
        ),
    )
    .expect("write relay.yaml");
    let extra = vec!["--allow".to_owned(), alice.clone()];
    let (child, addr) = spawn_relay(&config, &extra, None);
    let limited = Relay { child: Some(child), url: format!("ws://{addr}"), addr, config, db, extra };
    let out = limited.axon(&alice_key, &["import", file.to_str().expect("path"), "--in-flight", "1"]).ok();
    assert!(out.text().contains("imported 4, duplicates 0, invalid 0, rejected 0"), "{}", out.text());
    // Each refused event was retried once, when the relay said its bucket had a token
    // again: three 429s for four events (a fixed backoff shorter than 1 s needs more).
    let metrics = metrics_text(&limited);
    let refused: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("axon_events_rejected_total{code=\"429\"} "))
        .and_then(|value| value.trim().parse().ok())
        .expect("the 429 series is exported");
    assert!(refused <= 3.0, "{refused} rejections for 3 rate-limited events");
}

#[test]
fn req_stream_waits_as_long_as_the_relay_asks_when_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (alice_key, alice) = keygen(dir.path(), "alice");
    let config = dir.path().join("relay.yaml");
    let db = dir.path().join("axon.db");
    std::fs::write(
        &config,
        format!(
            "addr: \"127.0.0.1:0\"\ndb: \"{}\"\nrelay_url: \"{RELAY_URL}\"\nlimits:\n  max_connections: 2\n",
            db.display()
        ),
    )
    .expect("write relay.yaml");
    let extra = vec!["--allow".to_owned(), alice.clone()];
    let (child, addr) = spawn_relay(&config, &extra, None);
    let relay = Relay { child: Some(child), url: format!("ws://{addr}"), addr, config, db, extra };
    let rt = runtime();
    let key = load_key(&alice_key);
    let publisher = rt.block_on(relay.connect(&key));
    let holder = rt.block_on(relay.connect(&key));

    // The relay is full: the stream is refused with 503 and waits the relay's hint.
    let stream = Streaming::spawn(relay.axon_command(&alice_key, &["req", "--stream", "--kind", "1000"]));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !stream.stderr().contains("retry hint") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let stderr = stream.stderr();
    assert!(stderr.contains("reconnecting in 1.0 s (the relay's retry hint)"), "{stderr}");

    // A slot frees up: the stream gets in and prints what is published.
    drop(holder);
    rt.block_on(publisher.publish(&Event::sign(&key, now(), 1000, b"in".to_vec(), vec![]).expect("sign")))
        .expect("publish");
    let line = stream.next_json(Duration::from_secs(8));
    assert_eq!(line["content"], "in");
}
