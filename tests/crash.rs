//! Crash safety: a relay process killed with SIGKILL while a client streams publishes
//! loses no acknowledged event (spec §8: OK only after commit).

mod common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axon_relay::client::Client;
use axon_relay::protocol::Filter;
use common::*;

fn spawn_relay(dir: &std::path::Path) -> ChildRelay {
    ChildRelay::spawn(dir, &child_yaml(dir, &[&admin()], &[&alice()], "limits:\n  max_limit: 100000\n"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let relay = spawn_relay(dir.path());
    let url = relay.url.clone();
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
    drop(relay); // Child::kill: SIGKILL on Unix.
    for writer in writers {
        writer.await.expect("writer task");
    }
    let acknowledged = acknowledged.lock().expect("lock").clone();
    assert!(acknowledged.len() >= 500);

    let relay = spawn_relay(dir.path());
    let client = relay.connect(&alice()).await.expect("reconnect");
    let mut replay = client.subscribe("all", vec![Filter::default()], Some(0)).await.expect("subscribe");
    let stored: BTreeSet<_> = replay.stored().await.expect("replay").into_iter().map(|(event, _)| event.id).collect();
    let lost: Vec<_> = acknowledged.difference(&stored).collect();
    assert!(lost.is_empty(), "{} acknowledged events lost after SIGKILL", lost.len());
}
