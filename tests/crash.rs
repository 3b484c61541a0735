//! Crash safety: a relay process killed with SIGKILL while a client streams publishes
//! loses no acknowledged event (spec §8: OK only after commit).

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use axon_relay::client::Client;
use axon_relay::protocol::Filter;
use common::*;

/// Starts `axon relay` on an ephemeral port; returns the child and its ws:// URL.
fn spawn_relay(dir: &std::path::Path) -> (Child, String) {
    let config = dir.join("relay.yaml");
    let text = format!(
        "addr: \"127.0.0.1:0\"\ndb: \"{}\"\nrelay_url: \"{RELAY_URL}\"\nadmins: [\"{}\"]\nallowlist: [\"{}\"]\nlimits:\n  max_limit: 100000\n",
        dir.join("axon.db").display(),
        hex_of(&admin()),
        hex_of(&alice()),
    );
    std::fs::write(&config, text).expect("write config");
    let mut child = Command::new(env!("CARGO_BIN_EXE_axon"))
        .args(["relay", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn relay");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read listening line");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .to_owned();
    (child, format!("ws://{addr}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut child, url) = spawn_relay(dir.path());
    let acknowledged = Arc::new(std::sync::Mutex::new(BTreeSet::new()));
    let mut writers = Vec::new();
    for worker in 0..4 {
        let client = Client::connect(&url, RELAY_URL, &alice()).await.expect("connect");
        let acknowledged = acknowledged.clone();
        writers.push(tokio::spawn(async move {
            for index in 0.. {
                let event = event(&alice(), 1000, &format!("{worker}-{index}"), vec![]);
                match client.publish(&event).await {
                    Ok(_) => {
                        acknowledged.lock().expect("lock").insert(event.id);
                    }
                    Err(_) => return, // the relay died
                }
            }
        }));
    }
    // Let a good number of publishes through, then kill without warning.
    while acknowledged.lock().expect("lock").len() < 500 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix.
    child.wait().expect("reap");
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 500);

    let (mut child, url) = spawn_relay(dir.path());
    let client = Client::connect(&url, RELAY_URL, &alice()).await.expect("reconnect");
    let mut replay = client.subscribe("all", vec![Filter::default()], Some(0)).await.expect("subscribe");
    let stored: BTreeSet<_> = replay.stored().await.expect("replay").into_iter().map(|(event, _)| event.id).collect();
    child.kill().expect("stop");
    child.wait().expect("reap");
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost after SIGKILL", lost.len());
}
